package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/sluice-media/sluice/egress/transcode"
)

// renderTranscoders prints the running conversions of /v1/status with what they cost.
func renderTranscoders(w io.Writer, raw json.RawMessage) error {
	var list []transcode.ConversionStatus
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("reading transcoders: %w", err)
	}
	var cpu float64
	for _, c := range list {
		cpu += c.CPUSeconds
	}
	fmt.Fprintf(w, "\ntranscoders: %d", len(list))
	if len(list) == 0 {
		fmt.Fprintln(w)
		return nil
	}
	fmt.Fprintf(w, ", %s CPU\n", time.Duration(cpu*float64(time.Second)).Round(10*time.Millisecond))
	t := newTable(w, "ROOM", "PARTICIPANT", "TRACK", "CONVERSION", "READERS", "STATE", "PID", "RESTARTS", "CPU", "UP")
	for _, c := range list {
		pid := "-"
		if c.PID != 0 {
			pid = fmt.Sprint(c.PID)
		}
		t.row(c.Room, c.Participant, c.SourceTrack, c.From+" -> "+c.To, fmt.Sprint(c.Readers), c.State, pid,
			fmt.Sprint(c.Restarts), fmt.Sprintf("%.1fs", c.CPUSeconds), ago(c.StartedAt))
	}
	return t.flush()
}
