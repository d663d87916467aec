package bridge

import (
	"fmt"
	"sort"
	"sync"
)

// Type is one kind of connector ("mqtt", "http", "websocket"). Packages register their types
// in init(); the config loader looks a type up by the `type:` key of a connector, calls
// NewConfig, strictly decodes the YAML node into it and calls Validate; New builds the
// connector from the validated config.
type Type struct {
	// Name is the value of `type:` in the config.
	Name string
	// Description is one line for `edged connectors`.
	Description string
	// NewConfig returns a config with the type's defaults filled in; YAML is decoded over it.
	NewConfig func() ConnectorConfig
	// New builds a connector. It must not dial: connecting happens in the forwarder.
	New func(ConnectorConfig, Env) (Connector, error)
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Type{}
)

// Register adds a connector type. It panics on an empty name, a nil constructor or a duplicate
// name: all three are programming errors found at start-up.
func Register(t Type) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if t.Name == "" {
		panic("bridge: Register with an empty connector type name")
	}
	if t.NewConfig == nil || t.New == nil {
		panic(fmt.Sprintf("bridge: Register %q with a nil NewConfig or New", t.Name))
	}
	if _, dup := registry[t.Name]; dup {
		panic(fmt.Sprintf("bridge: connector type %q registered twice", t.Name))
	}
	registry[t.Name] = t
}

// Types lists the registered connector types sorted by name.
func Types() []Type {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]Type, 0, len(registry))
	for _, t := range registry {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LookupType returns the registered type called name.
func LookupType(name string) (Type, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	t, ok := registry[name]
	return t, ok
}

// NewConfig returns a fresh config with defaults for the connector type name, for the config
// loader: decode the connector's YAML node strictly into it, then call Validate.
func NewConfig(typeName string) (ConnectorConfig, error) {
	t, ok := LookupType(typeName)
	if !ok {
		names := make([]string, 0)
		for _, t := range Types() {
			names = append(names, t.Name)
		}
		return nil, fmt.Errorf("unknown connector type %q (known: %v)", typeName, names)
	}
	return t.NewConfig(), nil
}
