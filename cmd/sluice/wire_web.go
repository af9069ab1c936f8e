package main

import "github.com/sluice-media/sluice/web"

// wireWeb adds the built-in pages: /, /r/<room>, /r/<room>/publish.
func (d *daemon) wireWeb() error {
	web.Register(d.api)
	return nil
}
