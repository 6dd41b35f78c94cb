package main

import "testing"

// TestDemoRuns runs the whole feed demo, which must keep working.
func TestDemoRuns(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
