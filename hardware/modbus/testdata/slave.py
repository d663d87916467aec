"""Modbus slave for edged's tests (pymodbus 3.0, Debian python3-pymodbus).

usage: slave.py rtu DEVICE BAUD | tcp HOST:PORT
The units and their initial registers come as JSON on argv[-1]:
  {"1": {"co": [..], "di": [..], "hr": [..], "ir": [..]}, "2": {...}}
Blocks start at address 0 and are sized by the lists. Commands on stdin, one per line:
  silent UNIT        the unit stops answering (as if unplugged from the bus)
  answer UNIT        it answers again
  set UNIT TABLE ADDR V [V...]
  get UNIT TABLE ADDR N   prints the values as JSON on stdout
"ready" is printed on stdout once the server is listening.
"""
import asyncio
import json
import sys
import threading

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.framer.rtu_framer import ModbusRtuFramer
from pymodbus.framer.socket_framer import ModbusSocketFramer
from pymodbus.server.async_io import ModbusSerialServer, ModbusTcpServer

FC = {"co": 1, "di": 2, "hr": 3, "ir": 4}


def block(values):
    return ModbusSequentialDataBlock(0, list(values) or [0])


def main():
    mode = sys.argv[1]
    units = json.loads(sys.argv[-1])
    slaves = {}
    for uid, tables in units.items():
        slaves[int(uid)] = ModbusSlaveContext(
            co=block(tables.get("co", [])), di=block(tables.get("di", [])),
            hr=block(tables.get("hr", [])), ir=block(tables.get("ir", [])),
            zero_mode=True)
    all_slaves = dict(slaves)
    context = ModbusServerContext(slaves=slaves, single=False)

    def control():
        for line in sys.stdin:
            f = line.split()
            if not f:
                continue
            if f[0] == "silent":
                slaves.pop(int(f[1]), None)
            elif f[0] == "answer":
                slaves[int(f[1])] = all_slaves[int(f[1])]
            elif f[0] == "set":
                all_slaves[int(f[1])].setValues(FC[f[2]], int(f[3]), [int(v) for v in f[4:]])
            elif f[0] == "get":
                v = all_slaves[int(f[1])].getValues(FC[f[2]], int(f[3]), int(f[4]))
                print(json.dumps([int(x) for x in v]), flush=True)
            else:
                print("unknown command", f, file=sys.stderr, flush=True)

    async def run():
        if mode == "rtu":
            server = ModbusSerialServer(context, framer=ModbusRtuFramer, port=sys.argv[2],
                                        baudrate=int(sys.argv[3]), ignore_missing_slaves=True)
        else:
            host, port = sys.argv[2].rsplit(":", 1)
            server = ModbusTcpServer(context, framer=ModbusSocketFramer, address=(host, int(port)),
                                     ignore_missing_slaves=True)
        threading.Thread(target=control, daemon=True).start()
        if mode == "rtu":
            await server.start()
            print("ready", flush=True)
            while True:
                await asyncio.sleep(3600)
        else:
            print("ready", flush=True)
            await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
