package main

import (
	"bytes"
	"fmt"
	"os"

	"github.com/edged-dev/edged/wire"
)

func wireSection(dir string) string {
	var w bytes.Buffer
	fmt.Fprintf(&w, "### Bytes on the wire: CBOR vs JSON envelopes (%s)\n\n", dir)
	envs, err := wire.LoadCorpus(os.DirFS(dir))
	if err != nil || len(envs) == 0 {
		fmt.Fprintf(&w, "corpus not available (%v): nothing measured.\n", err)
		return w.String()
	}
	var cb, jb, tb int // CBOR, JSON, CBOR with JSON payloads transcoded to CBOR
	transcoded := 0
	for _, e := range envs {
		c, err1 := wire.MarshalEnvelope(e)
		j, err2 := wire.MarshalEnvelopeJSON(e)
		if err1 != nil || err2 != nil {
			fmt.Fprintf(&w, "marshal %s: %v %v\n", e.Topic, err1, err2)
			return w.String()
		}
		cb, jb = cb+len(c), jb+len(j)
		t := *e
		if len(e.Payload) > 0 && (e.Payload[0] == '{' || e.Payload[0] == '[') {
			if p, err := wire.JSONToCBOR(e.Payload); err == nil {
				t.Payload, t.ContentType = p, "application/cbor"
				transcoded++
			}
		}
		tc, err := wire.MarshalEnvelope(&t)
		if err != nil {
			tc = c
		}
		tb += len(tc)
	}
	batch := &wire.Batch{Gateway: "gw-plant-01", First: envs[0].ID, Last: envs[len(envs)-1].ID, Envelopes: envs}
	bc, err1 := wire.MarshalBatch(batch)
	bj, err2 := wire.MarshalBatchJSON(batch)
	fmt.Fprintf(&w, "| form | bytes | CBOR / JSON |\n| --- | ---: | ---: |\n")
	fmt.Fprintf(&w, "| %d JSON envelopes (`wire.MarshalEnvelopeJSON`) | %d | |\n", len(envs), jb)
	fmt.Fprintf(&w, "| %d CBOR envelopes (`wire.MarshalEnvelope`), payloads as is | %d | %.2f |\n", len(envs), cb, float64(cb)/float64(jb))
	fmt.Fprintf(&w, "| CBOR envelopes, %d JSON payloads transcoded to CBOR (`wire.JSONToCBOR`, as `format: cbor` does) | %d | %.2f |\n", transcoded, tb, float64(tb)/float64(jb))
	if err1 == nil && err2 == nil {
		fmt.Fprintf(&w, "| one batch of all: CBOR `MarshalBatch` vs JSON `MarshalBatchJSON` | %d vs %d | %.2f |\n", len(bc), len(bj), float64(len(bc))/float64(len(bj)))
	} else {
		fmt.Fprintf(&w, "| one batch of all | batch marshal failed: %v %v | |\n", err1, err2)
	}
	w.WriteString(compressSection(envs)) // compress.go
	return w.String()
}
