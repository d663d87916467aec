package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// READMEYAML returns the first ```yaml block after the line `<!-- marker -->` of the
// repository's README.md: the examples there are tested as real configs.
func READMEYAML(t testing.TB, marker string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	tag := "<!-- " + marker + " -->"
	i := strings.Index(s, tag)
	if i < 0 {
		t.Fatalf("README lacks %s", tag)
	}
	s = s[i:]
	const fence = "```yaml\n"
	start := strings.Index(s, fence)
	if start < 0 {
		t.Fatal("no yaml block after the marker")
	}
	s = s[start+len(fence):]
	end := strings.Index(s, "```")
	if end < 0 {
		t.Fatal("no yaml block after the marker")
	}
	return s[:end]
}
