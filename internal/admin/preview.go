package admin

import (
	"encoding/hex"
	"unicode/utf8"

	"github.com/edged-dev/edged/wire"
)

// Preview limits: what a browser is shown of one payload.
const (
	previewBytes = 4096 // bytes of a payload looked at
	previewChars = 600  // characters of text or diagnostic notation shown
)

// Preview is how the dashboard shows a payload: as text when it is UTF-8, as CBOR diagnostic
// notation when it decodes as CBOR, else as hex.
type Preview struct {
	Kind      string `json:"kind"` // text | cbor | hex | empty
	Text      string `json:"text"`
	Size      int    `json:"size"`
	Truncated bool   `json:"truncated,omitempty"`
}

// MakePreview renders p (only its first previewBytes are examined; size is the full length).
// It never fails: undecodable bytes become hex.
func MakePreview(p []byte, size int) Preview {
	pv := Preview{Size: size}
	if size == 0 {
		pv.Kind = "empty"
		return pv
	}
	cut := len(p) > previewBytes || size > len(p)
	if len(p) > previewBytes {
		p = p[:previewBytes]
	}
	switch {
	case isText(p, cut):
		pv.Kind, pv.Text = "text", string(p)
	case !cut:
		if d, err := wire.Diagnose(p); err == nil {
			pv.Kind, pv.Text = "cbor", d
			break
		}
		fallthrough
	default:
		n := min(len(p), previewChars/2)
		pv.Kind, pv.Text = "hex", hex.EncodeToString(p[:n])
		cut = cut || n < len(p)
	}
	if r := []rune(pv.Text); len(r) > previewChars {
		pv.Text, cut = string(r[:previewChars]), true
	}
	pv.Truncated = cut
	return pv
}

// isText: valid UTF-8 (a rune cut at the preview edge is allowed) without control
// characters other than tab and line breaks. CBOR maps and arrays start with bytes >= 0x80
// or control bytes, so they are not mistaken for text.
func isText(p []byte, cut bool) bool {
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRune(p[i:])
		if r == utf8.RuneError && n <= 1 {
			if cut && len(p)-i < utf8.UTFMax && !utf8.FullRune(p[i:]) {
				return true
			}
			return false
		}
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return false
		}
		i += n
	}
	return true
}
