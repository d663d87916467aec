package testutil

import (
	"os"
	"strings"
	"testing"
)

// READMEBlock returns the first fenced code block of language lang (```yaml) after the HTML
// comment <!-- marker --> in the file at path (a README whose examples tests check), failing
// the test when the file, the marker or the block is missing.
func READMEBlock(t testing.TB, path, marker, lang string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "<!-- "+marker+" -->")
	if i < 0 {
		t.Fatalf("%s lacks <!-- %s -->", path, marker)
	}
	s = s[i:]
	fence := "```" + lang + "\n"
	start := strings.Index(s, fence)
	if start < 0 {
		t.Fatalf("%s: no %s block after <!-- %s -->", path, lang, marker)
	}
	s = s[start+len(fence):]
	end := strings.Index(s, "```")
	if end < 0 {
		t.Fatalf("%s: the %s block after <!-- %s --> is not closed", path, lang, marker)
	}
	return s[:end]
}
