// chartrender renders a Helm chart the way `helm template` does, for CI machines where Helm is
// not installable: Go's text/template with sprig's functions (as Helm uses) plus Helm's own
// include, tpl, toYaml, fromYaml, toJson, required and fail, over .Values (values.yaml deep-merged
// with each -f file in order), .Release, .Chart, .Files and .Capabilities. It prints the rendered
// objects as JSON, {"values": the merged values, "objects": [{"template": NAME, "object": {...}}]}
// (what tests/deploy/validate_chart.mjs checks); NOTES.txt is rendered too, and only checked to
// render. Build with Debian's golang-go and golang-github-masterminds-sprig-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o chartrender .
//	chartrender -chart helm/squeeze -f values-a.yaml -f values-b.yaml [-name rel] [-namespace ns]
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

// files is .Files: reads files of the chart by path relative to its root.
type files struct{ root string }

func (f files) Get(name string) string {
	b, err := os.ReadFile(filepath.Join(f.root, name))
	if err != nil {
		return ""
	}
	return string(b)
}

func readYAML(path string) (map[string]interface{}, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return out, nil
}

// merge copies `over` onto `base`, recursing into maps (Helm's coalescing of values files).
func merge(base, over map[string]interface{}) map[string]interface{} {
	for k, v := range over {
		if bm, ok := base[k].(map[string]interface{}); ok {
			if om, ok := v.(map[string]interface{}); ok {
				base[k] = merge(bm, om)
				continue
			}
		}
		base[k] = v
	}
	return base
}

func toYAML(v interface{}) string {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func main() {
	chartDir := flag.String("chart", "", "the chart's directory")
	name := flag.String("name", "release", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	var overrides valueFiles
	flag.Var(&overrides, "f", "a values file merged over values.yaml (repeatable)")
	flag.Parse()
	if err := run(*chartDir, *name, *namespace, overrides); err != nil {
		fmt.Fprintln(os.Stderr, "chartrender:", err)
		os.Exit(1)
	}
}

func run(chartDir, name, namespace string, overrides []string) error {
	meta, err := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	values, err := readYAML(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, path := range overrides {
		over, err := readYAML(path)
		if err != nil {
			return err
		}
		values = merge(values, over)
	}
	chart := map[string]interface{}{}
	for k, v := range meta { // Helm exposes Chart.yaml's keys capitalized: .Chart.AppVersion
		chart[strings.ToUpper(k[:1])+k[1:]] = v
	}
	context := map[string]interface{}{
		"Values":  values,
		"Chart":   chart,
		"Release": map[string]interface{}{"Name": name, "Namespace": namespace, "Service": "Helm", "IsInstall": true, "Revision": 1},
		"Files":   files{chartDir},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{"Version": "v1.30.0", "Major": "1", "Minor": "30"},
		},
	}

	var paths []string
	for _, pattern := range []string{"templates/*", "templates/tests/*"} {
		found, _ := filepath.Glob(filepath.Join(chartDir, pattern))
		for _, p := range found {
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				paths = append(paths, p)
			}
		}
	}
	sort.Strings(paths)
	root := template.New("chart").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, data)
		return buf.String(), err
	}
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		out := map[string]interface{}{}
		_ = yaml.Unmarshal([]byte(s), &out)
		return out
	}
	funcs["toJson"] = func(v interface{}) string { b, _ := json.Marshal(v); return string(b) }
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	root.Funcs(funcs)
	for _, p := range paths {
		rel, _ := filepath.Rel(chartDir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if _, err := root.New(rel).Parse(string(b)); err != nil {
			return err
		}
	}

	type rendered struct {
		Template string                 `json:"template"`
		Object   map[string]interface{} `json:"object"`
	}
	out := []rendered{}
	for _, p := range paths {
		rel, _ := filepath.Rel(chartDir, p)
		base := filepath.Base(rel)
		if strings.HasPrefix(base, "_") {
			continue
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, rel, context); err != nil {
			return err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if base == "NOTES.txt" {
			continue
		}
		dec := yaml.NewDecoder(strings.NewReader(text))
		for {
			var obj map[string]interface{}
			err := dec.Decode(&obj)
			if err != nil {
				if err.Error() == "EOF" {
					break
				}
				return fmt.Errorf("%s: the rendered YAML does not parse: %v\n%s", rel, err, text)
			}
			if obj == nil {
				continue // an empty document (a disabled block)
			}
			out = append(out, rendered{rel, obj})
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]interface{}{"values": values, "objects": out})
}
