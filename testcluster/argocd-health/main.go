// Command argocd-health runs an Argo CD resource health script (health.lua)
// with gopher-lua, the Lua interpreter Argo CD embeds, the way Argo CD runs
// a script from argocd-cm (without `useOpenLibs`): only the base, table and
// package libraries are open (Argo CD adds a reduced os library, left out
// here, so a script that passes here does not need it), the object is the
// global table `obj`, and the script returns a table whose `status` must be
// one of Argo CD's health codes.
//
// Usage:
//
//	argocd-health test <dir>         runs <dir>/health_test.yaml (Argo CD's format) against <dir>/health.lua
//	argocd-health eval <health.lua>  the object (JSON or YAML) on stdin; prints {"status": ..., "message": ...}
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

// Health is what a health script returns, as Argo CD reads it.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// The codes Argo CD accepts; anything else is reported as Unknown.
var healthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

// What Argo CD reports when a script returns a status it does not know.
const invalidHealthStatus = "Lua returned an invalid health status"

type testFile struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus Health `json:"healthStatus"`
	} `json:"tests"`
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: argocd-health test <dir> | eval <health.lua>")
	}
	switch os.Args[1] {
	case "test":
		os.Exit(runTests(os.Args[2]))
	case "eval":
		script := readFile(os.Args[2])
		input, err := io.ReadAll(os.Stdin)
		if err != nil {
			fail("read stdin: %v", err)
		}
		health, err := evaluate(string(script), input)
		if err != nil {
			fail("%v", err)
		}
		out, _ := json.Marshal(health)
		fmt.Println(string(out))
	default:
		fail("unknown command %q", os.Args[1])
	}
}

// runTests checks every case of dir/health_test.yaml; returns the exit code.
func runTests(dir string) int {
	script := string(readFile(filepath.Join(dir, "health.lua")))
	var tests testFile
	if err := yaml.Unmarshal(readFile(filepath.Join(dir, "health_test.yaml")), &tests); err != nil {
		fail("parse health_test.yaml: %v", err)
	}
	if len(tests.Tests) == 0 {
		fail("no tests in %s", filepath.Join(dir, "health_test.yaml"))
	}
	failed := 0
	for _, test := range tests.Tests {
		got, err := evaluate(script, readFile(filepath.Join(dir, test.InputPath)))
		switch {
		case err != nil:
			fmt.Printf("FAIL %s: %v\n", test.InputPath, err)
			failed++
		case got != test.HealthStatus:
			fmt.Printf("FAIL %s: got %+v, want %+v\n", test.InputPath, got, test.HealthStatus)
			failed++
		default:
			fmt.Printf("ok   %s: %s %q\n", test.InputPath, got.Status, got.Message)
		}
	}
	fmt.Printf("%d of %d health tests passed\n", len(tests.Tests)-failed, len(tests.Tests))
	if failed > 0 {
		return 1
	}
	return 0
}

// evaluate runs the script on one object (JSON or YAML).
func evaluate(script string, object []byte) (Health, error) {
	var obj map[string]any
	if err := yaml.Unmarshal(object, &obj); err != nil {
		return Health{}, fmt.Errorf("parse the object: %w", err)
	}
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	libraries := []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	}
	for _, library := range libraries {
		open := lua.P{Fn: L.NewFunction(library.open), NRet: 0, Protect: true}
		if err := L.CallByParam(open, lua.LString(library.name)); err != nil {
			return Health{}, fmt.Errorf("open Lua library %s: %w", library.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return Health{}, fmt.Errorf("run health.lua: %w", err)
	}
	table, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("health.lua returned %s, not a table", L.Get(-1).Type())
	}
	health := Health{
		Status:  stringField(table, "status"),
		Message: stringField(table, "message"),
	}
	if !healthCodes[health.Status] {
		return Health{Status: "Unknown", Message: invalidHealthStatus}, nil
	}
	return health, nil
}

func stringField(table *lua.LTable, name string) string {
	if value, ok := table.RawGetString(name).(lua.LString); ok {
		return string(value)
	}
	return ""
}

// toLua converts a decoded JSON value: objects and arrays become tables
// (arrays indexed from 1), null becomes nil.
func toLua(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case map[string]any:
		table := L.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetString(key, toLua(L, item))
		}
		return table
	case []any:
		table := L.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(L, item))
		}
		return table
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}

func readFile(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	return data
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "argocd-health: "+format+"\n", args...)
	os.Exit(2)
}
