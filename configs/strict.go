package configs

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

var durationType = reflect.TypeOf(time.Duration(0))

func typeOf(v any) reflect.Type { return reflect.TypeOf(v).Elem() }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// check walks a YAML node against the Go type it will be decoded into. It reports unknown keys
// and values of the wrong shape or type with the file, line and dotted key, and records the
// line of every key it sees.
func check(n *yaml.Node, t reflect.Type, path, file string, lines map[string]source) error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if path != "" {
		lines[path] = source{file: file, line: n.Line}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	isNull := n.Kind == yaml.ScalarNode && n.Tag == "!!null"
	bad := func(format string, args ...any) error {
		return &Error{File: file, Line: n.Line, Key: path, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			return bad("expected a duration such as 10s or 5m")
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			return bad("%q is not a duration (write it like 500ms, 10s, 5m, 72h)", n.Value)
		}
		return nil
	case t.Kind() == reflect.Struct:
		if isNull {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return bad("expected a mapping of keys")
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				msg := "unknown key"
				if s := closest(k.Value, fields); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				return &Error{File: file, Line: k.Line, Key: join(path, k.Value), Msg: msg}
			}
			if err := check(v, ft, join(path, k.Value), file, lines); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Map:
		if isNull {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return bad("expected a mapping")
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if err := check(v, t.Elem(), join(path, k.Value), file, lines); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Slice:
		if isNull {
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return bad("expected a list")
		}
		for i, item := range n.Content {
			if err := check(item, t.Elem(), join(path, strconv.Itoa(i)), file, lines); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return bad("expected a single value")
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		return bad("%q is not %s", n.Value, describe(t))
	}
	return nil
}

func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	default:
		return "a " + t.Kind().String()
	}
}

// yamlFields maps the YAML keys of a struct (following inline fields) to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// closest returns the known key nearest to k when it is a likely typo.
func closest(k string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, n := range names {
		if d := distance(k, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// distance is the Levenshtein distance of two short keys.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

var lineRE = regexp.MustCompile(`line (\d+)`)

func yamlLine(err error) int {
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// applyEnv sets every key that has a SLUICE_<PATH> variable. Strings are taken as they are;
// other values are YAML (flow syntax for lists and maps); a list of strings may also be
// written comma-separated.
func applyEnv(cfg *Config, env func(string) (string, bool), lines map[string]source) error {
	return envWalk(reflect.ValueOf(cfg).Elem(), "", env, lines)
}

func envWalk(v reflect.Value, path string, env func(string) (string, bool), lines map[string]source) error {
	t := v.Type()
	if t.Kind() == reflect.Struct && t != durationType {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			if err := envWalk(v.Field(i), join(path, name), env, lines); err != nil {
				return err
			}
		}
		return nil
	}
	varName := "SLUICE_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
	val, ok := env(varName)
	if !ok {
		return nil
	}
	file := "environment " + varName
	lines[path] = source{file: file}
	if t.Kind() == reflect.String {
		v.SetString(val)
		return nil
	}
	var n yaml.Node
	if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String && !strings.HasPrefix(strings.TrimSpace(val), "[") {
		n = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, part := range strings.Split(val, ",") {
			if part = strings.TrimSpace(part); part != "" {
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: part})
			}
		}
	} else {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(val), &doc); err != nil || len(doc.Content) == 0 {
			return &Error{File: file, Key: path, Msg: "not a valid value"}
		}
		n = *doc.Content[0]
	}
	if err := check(&n, t, path, file, map[string]source{}); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Line = 0 // the variable has no lines worth naming
		}
		return err
	}
	fresh := reflect.New(t)
	if err := n.Decode(fresh.Interface()); err != nil {
		return &Error{File: file, Key: path, Msg: err.Error()}
	}
	v.Set(fresh.Elem())
	return nil
}
