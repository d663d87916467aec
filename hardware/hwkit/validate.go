package hwkit

import (
	"errors"
	"fmt"

	"github.com/edged-dev/edged/internal/confkit"
)

// Problems collects the problems of one config section as *confkit.KeyError, with keys
// relative to the section.
type Problems []error

// Add records a problem at key.
func (p *Problems) Add(key, format string, args ...any) {
	*p = append(*p, confkit.Errorf(key, format, args...))
}

// Join records the problems of a part (a joined error, or nil), as they are.
func (p *Problems) Join(err error) {
	if err != nil {
		*p = append(*p, err)
	}
}

// Name records a problem with the section's name key (see CheckName).
func (p *Problems) Name(name string) {
	if err := CheckName(name); err != nil {
		p.Add("name", "%v", err)
	}
}

// Err is every recorded problem, joined with errors.Join; nil if there is none.
func (p Problems) Err() error { return errors.Join(p...) }

// ValidateList validates every item of the list at key ("serial") with validate, whose
// problems are re-rooted under the item ("serial[1].baud"), and reports an item whose name an
// earlier item has already taken. Items without a name are left to validate.
func ValidateList[T any](key string, items []T, name func(*T) string, validate func(i int, item *T) error) error {
	var probs Problems
	seen := map[string]int{}
	for i := range items {
		at := fmt.Sprintf("%s[%d]", key, i)
		if n := name(&items[i]); n != "" {
			if j, dup := seen[n]; dup {
				probs.Add(at+".name", "%q is already used by %s[%d]", n, key, j)
			} else {
				seen[n] = i
			}
		}
		probs.Join(confkit.Prefix(at, validate(i, &items[i])))
	}
	return probs.Err()
}
