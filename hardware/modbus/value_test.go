package modbus

import (
	mb "github.com/simonvetter/modbus"
	"io"
	"log/slog"
	"math"
	"os"
	"testing"
	"time"
)

func pc(dataType, order string, count int, scale, offset float64) *PointConfig {
	addr := 0
	p := &PointConfig{Name: "p", Type: Holding, Address: &addr, DataType: dataType, WordOrder: order, Count: count, Scale: &scale, Offset: offset}
	return p
}

func TestDecodeEveryDataTypeAndWordOrder(t *testing.T) {
	f32 := math.Float32bits(-12.5)
	f64 := math.Float64bits(1234.5678)
	cases := []struct {
		name string
		p    *PointConfig
		regs []uint16
		want any
	}{
		{"bool", pc("bool", "high_first", 1, 1, 0), []uint16{7}, true},
		{"int16", pc("int16", "high_first", 1, 1, 0), []uint16{0xFFFE}, int64(-2)},
		{"uint16", pc("uint16", "high_first", 1, 1, 0), []uint16{0xFFFE}, uint64(65534)},
		{"int32 high", pc("int32", "high_first", 2, 1, 0), []uint16{0xFFFF, 0xFFFD}, int64(-3)},
		{"int32 low", pc("int32", "low_first", 2, 1, 0), []uint16{0xFFFD, 0xFFFF}, int64(-3)},
		{"uint32 high", pc("uint32", "high_first", 2, 1, 0), []uint16{0x0001, 0x0002}, uint64(0x00010002)},
		{"uint32 low", pc("uint32", "low_first", 2, 1, 0), []uint16{0x0002, 0x0001}, uint64(0x00010002)},
		{"float32 high", pc("float32", "high_first", 2, 1, 0), []uint16{uint16(f32 >> 16), uint16(f32)}, float64(-12.5)},
		{"float32 low", pc("float32", "low_first", 2, 1, 0), []uint16{uint16(f32), uint16(f32 >> 16)}, float64(-12.5)},
		{"int64 high", pc("int64", "high_first", 4, 1, 0), []uint16{0xFFFF, 0xFFFF, 0xFFFF, 0xFFF0}, int64(-16)},
		{"int64 low", pc("int64", "low_first", 4, 1, 0), []uint16{0xFFF0, 0xFFFF, 0xFFFF, 0xFFFF}, int64(-16)},
		{"uint64", pc("uint64", "high_first", 4, 1, 0), []uint16{0x8000, 0, 0, 1}, uint64(1<<63 + 1)},
		{"float64 high", pc("float64", "high_first", 4, 1, 0), []uint16{uint16(f64 >> 48), uint16(f64 >> 32), uint16(f64 >> 16), uint16(f64)}, 1234.5678},
		{"float64 low", pc("float64", "low_first", 4, 1, 0), []uint16{uint16(f64), uint16(f64 >> 16), uint16(f64 >> 32), uint16(f64 >> 48)}, 1234.5678},
		{"string", pc("string", "high_first", 3, 1, 0), []uint16{'A'<<8 | 'B', 'C'<<8 | 0, 0}, "ABC"}, //nolint:staticcheck // SA4016: the zero pad byte is spelled out
		{"scaled int16", pc("int16", "high_first", 1, 0.1, -40), []uint16{0xFFF6}, float64(-10)*0.1 - 40},
		{"scaled uint32", pc("uint32", "high_first", 2, 0.01, 0), []uint16{0, 12345}, 123.45},
	}
	for _, c := range cases {
		got, err := newCodec(c.p).decodeRegisters(c.regs)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if g, ok := got.(float64); ok {
			if w := c.want.(float64); math.Abs(g-w) > 1e-9 {
				t.Errorf("%s: got %v, want %v", c.name, g, w)
			}
			continue
		}
		if got != c.want {
			t.Errorf("%s: got %#v, want %#v", c.name, got, c.want)
		}
	}
	if _, err := newCodec(pc("int32", "high_first", 2, 1, 0)).decodeRegisters([]uint16{1}); err == nil {
		t.Error("short registers decoded")
	}
}

func TestEncodeIsDecodeInverse(t *testing.T) {
	cases := []struct {
		p *PointConfig
		v any
	}{
		{pc("int16", "high_first", 1, 1, 0), float64(-300)},
		{pc("uint16", "high_first", 1, 1, 0), float64(65535)},
		{pc("int32", "low_first", 2, 1, 0), float64(-70000)},
		{pc("uint32", "high_first", 2, 1, 0), float64(4000000000)},
		{pc("float32", "low_first", 2, 1, 0), float64(21.5)},
		{pc("int64", "low_first", 4, 1, 0), float64(-1 << 40)},
		{pc("uint64", "high_first", 4, 1, 0), float64(1 << 50)},
		{pc("float64", "low_first", 4, 1, 0), 3.25},
		{pc("int16", "high_first", 1, 0.1, 0), 12.3},
		{pc("uint16", "high_first", 1, 0.5, 10), float64(20)},
		{pc("bool", "high_first", 1, 1, 0), true},
	}
	for _, c := range cases {
		cd := newCodec(c.p)
		regs, err := cd.encodeRegisters(c.v)
		if err != nil {
			t.Fatalf("%s %v: %v", c.p.DataType, c.v, err)
		}
		back, err := cd.decodeRegisters(regs)
		if err != nil {
			t.Fatal(err)
		}
		bf, _ := toFloat(back)
		vf, _ := toFloat(c.v)
		if math.Abs(bf-vf) > 1e-6*math.Max(1, math.Abs(vf)) {
			t.Errorf("%s %v: round trip gave %v (registers %v)", c.p.DataType, c.v, back, regs)
		}
	}
	for _, c := range []struct {
		p *PointConfig
		v any
	}{
		{pc("int16", "high_first", 1, 1, 0), float64(40000)},
		{pc("uint16", "high_first", 1, 1, 0), float64(-1)},
		{pc("uint32", "high_first", 2, 1, 0), float64(1 << 33)},
		{pc("int16", "high_first", 1, 1, 0), "text"},
		{pc("bool", "high_first", 1, 1, 0), float64(2)},
	} {
		if regs, err := newCodec(c.p).encodeRegisters(c.v); err == nil {
			t.Errorf("%s %v: encoded to %v, want an error", c.p.DataType, c.v, regs)
		}
	}
}

func TestPlanMergesAdjacentUpToTheProtocolLimit(t *testing.T) {
	a := func(n int) *int { return &n }
	buses := []BusConfig{{Name: "b", TCP: "127.0.0.1:502", Units: []UnitConfig{{Name: "u", ID: a(1), Points: []PointConfig{
		{Name: "r0", Type: Holding, Address: a(0)},
		{Name: "r1", Type: Holding, Address: a(1), DataType: "float32"}, // 1..2
		{Name: "r3", Type: Holding, Address: a(3)},                      // touches: same request
		{Name: "r10", Type: Holding, Address: a(10)},                    // gap: new request
		{Name: "slow", Type: Holding, Address: a(4), Poll: 5 * time.Second},
		{Name: "in", Type: Input, Address: a(4)},
		{Name: "big1", Type: Input, Address: a(100), DataType: "string", Count: 100},
		{Name: "big2", Type: Input, Address: a(200), DataType: "string", Count: 30}, // a gap after big1: its own request
		{Name: "c0", Type: Coil, Address: a(0)},
		{Name: "c1", Type: Coil, Address: a(1)},
	}}}}}
	ApplyDefaults(buses)
	if err := Validate(buses); err != nil {
		t.Fatal(err)
	}
	b := newBus(buses[0], newFakeLocal(), slog.New(slog.DiscardHandler), mustMetrics(t), nil)
	type got struct {
		kind      string
		addr, qty uint16
		n         int
	}
	var reqs []got
	for _, r := range b.reqs {
		reqs = append(reqs, got{r.kind, r.addr, r.qty, len(r.points)})
	}
	want := []got{
		{Holding, 0, 4, 3}, {Holding, 10, 1, 1}, {Holding, 4, 1, 1},
		{Input, 4, 1, 1}, {Input, 100, 100, 1}, {Input, 200, 30, 1},
		{Coil, 0, 2, 2},
	}
	if len(reqs) != len(want) {
		t.Fatalf("requests %+v, want %+v", reqs, want)
	}
	for i := range want {
		if reqs[i] != want[i] {
			t.Errorf("request %d: %+v, want %+v", i, reqs[i], want[i])
		}
	}
}

func TestReportByException(t *testing.T) {
	now := time.Unix(1000, 0)
	r := rbe{deadband: &Deadband{Value: 1}, maxInterval: 10 * time.Second}
	step := func(v float64, dt time.Duration) bool {
		now = now.Add(dt)
		if r.shouldPublish(v, now) {
			r.published(v, QualityGood, now)
			return true
		}
		return false
	}
	seq := []struct {
		v    float64
		dt   time.Duration
		want bool
	}{
		{10, 0, true}, {10.5, time.Second, false}, {11.0, time.Second, false}, {11.01, time.Second, true},
		{10.5, time.Second, false}, {10.5, 9 * time.Second, true}, {10.5, time.Second, false},
	}
	for i, s := range seq {
		if got := step(s.v, s.dt); got != s.want {
			t.Errorf("step %d (v=%v): published=%v, want %v", i, s.v, got, s.want)
		}
	}
	p := rbe{deadband: &Deadband{Value: 10, Percent: true}}
	p.published(100.0, QualityGood, now)
	if p.shouldPublish(109.0, now) || !p.shouldPublish(111.0, now) {
		t.Error("percent deadband: 9% published or 11% not")
	}
	oc := rbe{onChange: true}
	oc.published(true, QualityGood, now)
	if oc.shouldPublish(true, now) || !oc.shouldPublish(false, now) {
		t.Error("on_change: same value published or a change not")
	}
	oc.published(nil, QualityStale, now)
	if !oc.shouldPublish(true, now) {
		t.Error("a good value after stale must be published")
	}
}

func mustMetrics(t testing.TB) *metrics {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestClassifyLibraryErrors(t *testing.T) {
	rtu := &Bus{cfg: BusConfig{RTU: &RTUConfig{}}}
	tcp := &Bus{cfg: BusConfig{TCP: "h:1"}}
	cases := []struct {
		err               error
		result            string
		code              int
		rtuBroken, tcpBrk bool
	}{
		{nil, resultOK, 0, false, false},
		{mb.ErrRequestTimedOut, resultTimeout, 0, false, false},
		{os.ErrDeadlineExceeded, resultTimeout, 0, false, false},
		{mb.ErrBadCRC, resultCRC, 0, false, false},
		{mb.ErrBadUnitId, resultProtocol, 0, false, true},
		{mb.ErrShortFrame, resultProtocol, 0, false, true},
		{mb.ErrIllegalDataAddress, resultException, 2, false, false},
		{mb.ErrServerDeviceBusy, resultException, 6, false, false},
		{mb.ErrGWTargetFailedToRespond, resultException, 11, false, false},
		{io.EOF, resultError, 0, true, true},
	}
	for _, c := range cases {
		r, code := classify(c.err)
		if r != c.result || code != c.code {
			t.Errorf("%v: %s/%d, want %s/%d", c.err, r, code, c.result, c.code)
		}
		if rtu.linkBroken(r) != c.rtuBroken || tcp.linkBroken(r) != c.tcpBrk {
			t.Errorf("%v: link broken rtu=%v tcp=%v", c.err, rtu.linkBroken(r), tcp.linkBroken(r))
		}
	}
}
