package media

import "time"

func waitTick() { time.Sleep(10 * time.Millisecond) }
