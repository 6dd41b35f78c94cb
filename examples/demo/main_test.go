package main

import "testing"

// The README's first command must keep working.
func TestDemoRuns(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
