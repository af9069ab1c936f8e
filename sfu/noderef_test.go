package sfu

import (
	"encoding/json"
	"testing"
)

// NodeRef is a bare id on server.* events and the node object on node.*; both decode back.
func TestNodeRefWireForms(t *testing.T) {
	for _, tc := range []struct {
		name string
		ref  NodeRef
		wire string
	}{
		{"bare id", NodeRef{ID: "edge-1"}, `{"node":"edge-1"}`},
		{"object", NodeRef{ID: "edge-2", Address: "http://10.0.0.2:8800", Version: "v1"}, `{"node":{"id":"edge-2","address":"http://10.0.0.2:8800","version":"v1"}}`},
		{"absent", NodeRef{}, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(struct {
				Node NodeRef `json:"node,omitzero"`
			}{tc.ref})
			if err != nil || string(got) != tc.wire {
				t.Fatalf("marshal: %s %v, want %s", got, err, tc.wire)
			}
			var back struct {
				Node NodeRef `json:"node"`
			}
			if err := json.Unmarshal(got, &back); err != nil || back.Node != tc.ref {
				t.Fatalf("unmarshal: %+v %v, want %+v", back.Node, err, tc.ref)
			}
		})
	}
}
