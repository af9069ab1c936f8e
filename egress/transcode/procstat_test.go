package transcode

import (
	"os"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     procStat
		err      bool
	}{
		{"ffmpeg", "4242 (ffmpeg) S 17 4242 17 0 -1 4194304 2139 0 0 0 150 25 0 0 20 0 3 0 1234 0 0",
			procStat{comm: "ffmpeg", ppid: 17, cpu: 1750 * time.Millisecond}, false},
		{"odd name", "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0",
			procStat{comm: "a) b (c", ppid: 1, cpu: 70 * time.Millisecond}, false},
		{"short", "7 (x) R 1 2 3", procStat{}, true},
		{"no name", "7 x R 1 2 3 4 5 6 7 8 9 10 11 12 13", procStat{}, true},
		{"negative", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 -3 4 0 0", procStat{}, true},
		{"huge", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 99999999999999999 4 0 0", procStat{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tc.in))
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v (error %v)", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestReadOwnProcStat(t *testing.T) {
	st, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != os.Getppid() || st.comm == "" {
		t.Fatalf("own stat %+v", st)
	}
}

// FuzzParseProcStat: any content is refused with an error or parsed into sane values.
func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte("4242 (ffmpeg) S 17 4242 17 0 -1 4194304 2139 0 0 0 150 25 0 0 20 0 3 0 1234 0 0"))
	f.Add([]byte("7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0"))
	f.Add([]byte("1 ("))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseProcStat(b)
		if err == nil && (st.cpu < 0 || st.ppid < 0 || len(st.comm) > len(b)) {
			t.Fatalf("insane result %+v", st)
		}
	})
}
