package main

import "testing"

func TestDaemonGCPercent(t *testing.T) {
	tests := []struct {
		name    string
		env     string
		current int
		want    int
	}{
		{"without GOGC the daemon collects at 50 %", "", 100, 50},
		{"a GOGC in the environment is kept", "200", 200, 200},
		{"GOGC=off is kept", "off", -1, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := daemonGCPercent(tc.env, tc.current); got != tc.want {
				t.Errorf("daemonGCPercent(%q, %d) = %d, want %d", tc.env, tc.current, got, tc.want)
			}
		})
	}
}
