package ego

import (
	"context"
	"os"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/plugin/sdk"
)

// Plugin is the backend as an allocator plugin (sfalloc-plugin-ego serves
// it). Its logs go to stderr as JSON in the field names go-plugin's host
// reads, so they reach the host's log.
func Plugin(version string) sdk.Backend[Config] {
	return sdk.Backend[Config]{
		Name: Name, Description: Description, Version: version,
		Open: func(ctx context.Context, cfg *Config, env sdk.Env) (allocator.Allocator, error) {
			zerolog.LevelFieldName, zerolog.MessageFieldName, zerolog.TimestampFieldName = "@level", "@message", "@timestamp"
			cfg.StateDir = env.StateDir
			return New(ctx, *cfg, WithLogger(zerolog.New(os.Stderr).With().Timestamp().Logger()))
		},
	}
}
