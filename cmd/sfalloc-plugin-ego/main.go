// Command sfalloc-plugin-ego is SnowFlock's Platform EGO allocator backend
// (allocator/ego) as an allocator plugin: sfalloc and sfld start it when
// the configuration selects backend ego, and talk to it over go-plugin.
// Started by hand it only says so.
package main

import "github.com/snowflock/snowflock/allocator/ego"

// version is set at build time (make build: -ldflags "-X main.version=…").
var version = "dev"

func main() { ego.Plugin(version).Serve() }
