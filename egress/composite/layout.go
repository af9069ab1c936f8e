package composite

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Layouts.
const (
	// LayoutGrid gives every participant an equal tile, re-tiled as people join and leave.
	LayoutGrid = "grid"
	// LayoutSpeaker shows the active speaker (a screen share first) large and the others in a
	// strip below.
	LayoutSpeaker = "speaker"
	// LayoutSingle shows one participant: the one named, else the speaker or latest publisher.
	LayoutSingle = "single"
)

// ValidLayout reports an unknown layout name.
func ValidLayout(name string) error {
	switch name {
	case LayoutGrid, LayoutSpeaker, LayoutSingle:
		return nil
	}
	return fmt.Errorf("unknown layout %q (grid, speaker or single)", name)
}

// rect is a tile on the canvas, in luma pixels; x, y, w and h are even so that chroma planes
// align.
type rect struct{ x, y, w, h int }

// member is one participant as the layout sees it.
type member struct {
	identity string
	screen   bool  // shares a screen (LiveKit source screen_share)
	joined   int64 // order of arrival: later is larger
}

// placement is where one participant goes.
type placement struct {
	identity string
	r        rect
}

// arrange places members on a w×h canvas. main is the participant the speaker and single layouts
// show large ("" picks the latest arrival; a screen share always wins in speaker).
func arrange(layout string, w, h int, members []member, main string) []placement {
	if len(members) == 0 {
		return nil
	}
	ms := slices.Clone(members)
	slices.SortStableFunc(ms, func(a, b member) int { return cmp.Compare(a.joined, b.joined) })
	big := pickMain(layout, ms, main)
	switch layout {
	case LayoutSingle:
		return []placement{{big, rect{0, 0, w, h}}}
	case LayoutSpeaker:
		if len(ms) == 1 {
			return []placement{{big, rect{0, 0, w, h}}}
		}
		stripH := even(h / 4)
		out := []placement{{big, rect{0, 0, w, h - stripH}}}
		var others []member
		for _, m := range ms {
			if m.identity != big {
				others = append(others, m)
			}
		}
		n := len(others)
		tw := even(w / max(n, 4))
		x0 := even((w - tw*n) / 2)
		for i, m := range others {
			out = append(out, placement{m.identity, rect{x0 + i*tw, h - stripH, tw, stripH}})
		}
		return out
	default:
		return grid(w, h, ms)
	}
}

// grid tiles members in rows of equal cells: the smallest square-ish grid that holds them, the
// last row centred.
func grid(w, h int, ms []member) []placement {
	n := len(ms)
	cols := 1
	for cols*cols < n {
		cols++
	}
	rows := (n + cols - 1) / cols
	tw, th := even(w/cols), even(h/rows)
	y0 := even((h - th*rows) / 2)
	out := make([]placement, 0, n)
	for i, m := range ms {
		row, col := i/cols, i%cols
		inRow := cols
		if row == rows-1 {
			inRow = n - row*cols
		}
		x0 := even((w - tw*inRow) / 2)
		out = append(out, placement{m.identity, rect{x0 + col*tw, y0 + row*th, tw, th}})
	}
	return out
}

func pickMain(layout string, ms []member, main string) string {
	if layout == LayoutSpeaker {
		for i := len(ms) - 1; i >= 0; i-- {
			if ms[i].screen {
				return ms[i].identity
			}
		}
	}
	for _, m := range ms {
		if m.identity == main {
			return main
		}
	}
	return ms[len(ms)-1].identity
}

func even(v int) int { return v &^ 1 }

// Options are the composite fields of a broadcast or recording request.
type Options struct {
	// Layout, when set, makes the output the whole room composed: grid, speaker or single.
	Layout string `json:"layout,omitempty"`
	// Width and Height of the picture (default 1280x720), FPS (30), VideoBitrateKbps (3000),
	// KeyframeInterval (2s).
	Width            int    `json:"width,omitempty"`
	Height           int    `json:"height,omitempty"`
	FPS              int    `json:"fps,omitempty"`
	VideoBitrateKbps int    `json:"video_bitrate_kbps,omitempty"`
	KeyframeInterval string `json:"keyframe_interval,omitempty"`
	// Labels draws each participant's name on their tile.
	Labels bool `json:"labels,omitempty"`
}

// Spec is the composite of room that o asks for; focus is the participant single shows.
func (o Options) Spec(room, focus string) (Spec, error) {
	s := Spec{Room: room, Layout: o.Layout, Focus: focus, Width: o.Width, Height: o.Height, FPS: o.FPS,
		BitrateKbps: o.VideoBitrateKbps, Labels: o.Labels}
	if o.KeyframeInterval != "" {
		d, err := time.ParseDuration(o.KeyframeInterval)
		if err != nil {
			return Spec{}, fmt.Errorf("keyframe_interval: %w", err)
		}
		s.KeyframeInterval = d
	}
	return s, s.Defaults()
}
