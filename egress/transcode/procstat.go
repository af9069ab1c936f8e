package transcode

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (sysconf(_SC_CLK_TCK)), 100 on every
// Linux architecture Go runs on.
const userHZ = 100

// procStat is what we read of /proc/<pid>/stat (proc(5)).
type procStat struct {
	comm string
	ppid int
	cpu  time.Duration // utime + stime
}

// readProcStat reads a process's stat file.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

// parseProcStat parses the content of /proc/<pid>/stat: "pid (comm) state ppid ...", with
// utime and stime the 14th and 15th fields. comm may hold spaces and parentheses, so the fields
// are counted from its last closing parenthesis.
func parseProcStat(b []byte) (procStat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, errors.New("proc stat: no command name")
	}
	fields := bytes.Fields(b[end+1:]) // state is fields[0], the 3rd field of the line
	if len(fields) < 13 {
		return procStat{}, fmt.Errorf("proc stat: %d fields after the command name, want 13 or more", len(fields))
	}
	num := func(i int) (int64, error) {
		n, err := strconv.ParseInt(string(fields[i]), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("proc stat: field %d: %q is not a count", i+3, fields[i])
		}
		return n, nil
	}
	ppid, err := num(1)
	if err != nil {
		return procStat{}, err
	}
	utime, err := num(11)
	if err != nil {
		return procStat{}, err
	}
	stime, err := num(12)
	if err != nil {
		return procStat{}, err
	}
	const maxTicks = int64(1) << 40 // keeps the conversion to a Duration from overflowing
	if utime > maxTicks || stime > maxTicks {
		return procStat{}, errors.New("proc stat: CPU time out of range")
	}
	return procStat{
		comm: string(b[open+1 : end]),
		ppid: int(ppid),
		cpu:  time.Duration(utime+stime) * time.Second / userHZ,
	}, nil
}
