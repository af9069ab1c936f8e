package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Every command a user can run has a one-line summary, an example, and answers --help with
// its usage; commands that only group others list them.
func TestEveryCommandHasHelp(t *testing.T) {
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" || strings.HasPrefix(c.CommandPath(), "sluice completion") {
			return
		}
		n++
		if c.Short == "" {
			t.Errorf("%q has no short description", c.CommandPath())
		}
		if c.Runnable() && c.Example == "" {
			t.Errorf("%q has no example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRoot())
	if n < 20 {
		t.Errorf("walked %d commands; the tree is smaller than expected", n)
	}
	for _, args := range [][]string{{"--help"}, {"record", "start", "--help"}, {"ingest", "create", "rtsp", "--help"}} {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.Contains(out.String(), "Usage:") || !strings.Contains(out.String(), "Example") {
			t.Errorf("%v prints no usage or example:\n%s", args, out.String())
		}
	}
}
