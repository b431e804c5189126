// Package plugin runs allocator backends as separate processes through
// hashicorp/go-plugin (gRPC, automatic mutual TLS): the host side launches
// a plugin binary and returns a proxy that satisfies allocator.Allocator,
// and the serving side (used by allocator/plugin/sdk) answers for a backend
// inside the plugin process.
//
// # Protocol
//
// The handshake is a magic cookie plus a protocol version, which is the API
// version of proto/allocator.proto. The host offers every version it
// speaks (VersionedPlugins) and go-plugin picks the highest one the plugin
// serves too; a plugin that shares none fails to start with an error naming
// both lists. After the handshake the host asks PluginInfo (name, version,
// API versions, capabilities), then Open (the backend's configuration
// section and state directory), then uses the allocator calls.
//
// Errors cross the boundary as gRPC statuses whose codes name the
// allocator error classes (ToStatus, FromStatus), so errors.Is works on
// the host exactly as in-process.
//
// # Faults
//
// Every Request carries a token chosen by the host. If the host gives up
// on a Request (its deadline passes) it sends Abandon(token) and the plugin
// releases whatever that request was granted. If the plugin crashed or
// hung instead, the host records the token on disk and hands it to the next
// Open of the same plugin, which releases the grant then (the serving side
// journals each grant by token before answering).
package plugin

import (
	goplugin "github.com/hashicorp/go-plugin"
)

// Protocol (API) versions.
const (
	// APIVersion1 is proto/allocator.proto, package snowflock.allocator.v1.
	APIVersion1 = 1
)

// APIVersions lists the protocol versions this build speaks, oldest first.
var APIVersions = []int{APIVersion1}

// BinaryPrefix starts the file name of every allocator plugin:
// sfalloc-plugin-NAME serves backend NAME.
const BinaryPrefix = "sfalloc-plugin-"

// pluginKey names the allocator in go-plugin's plugin sets.
const pluginKey = "allocator"

// CapabilityHosts says the plugin answers Hosts (allocator.HostReporter).
const CapabilityHosts = "hosts"

// Handshake is shared by host and plugins. The cookie only keeps a plugin
// binary started by hand from waiting for a host; it is no security.
var Handshake = goplugin.HandshakeConfig{
	MagicCookieKey:   "SNOWFLOCK_ALLOCATOR_PLUGIN",
	MagicCookieValue: "b6c5d1f0-allocator-plugin",
}

// Info describes a plugin, as its PluginInfo call reports it.
type Info struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Version     string `json:"version"`
	APIVersions []int  `json:"api_versions"`
	// Capabilities lists optional features (CapabilityHosts).
	Capabilities []string `json:"capabilities,omitempty"`
}
