package slurm

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Modes of talking to Slurm.
const (
	// ModeCLI runs Slurm's commands (salloc, squeue, scontrol, scancel, sinfo).
	ModeCLI = "cli"
	// ModeREST talks to slurmrestd (openapi v0.0.38) with a JWT.
	ModeREST = "rest"
)

// DefaultPollInterval is how often Events looks at Slurm's queue.
const DefaultPollInterval = time.Second

// Config is the slurm backend's configuration (section allocator.slurm).
type Config struct {
	// SlurmConf is the slurm.conf the commands use (SLURM_CONF); empty: the
	// environment's SLURM_CONF, else Slurm's default.
	SlurmConf string `mapstructure:"slurm_conf" json:"slurm_conf,omitempty"`
	// Partition jobs go to; empty: the cluster's default. A request's
	// consumer (sfalloc -p) overrides it.
	Partition string `mapstructure:"partition" json:"partition,omitempty"`
	// Account jobs are charged to; empty: the user's default.
	Account string `mapstructure:"account" json:"account,omitempty"`
	// TimeLimit is the default lease: the Slurm time limit of a job whose
	// request names no lease; 0 means the partition's default.
	TimeLimit time.Duration `mapstructure:"time_limit" json:"time_limit,omitempty"`
	// Mode is cli (default) or rest.
	Mode string `mapstructure:"mode" json:"mode,omitempty"`
	// RESTURL is slurmrestd's base URL (rest mode), e.g. http://127.0.0.1:6820.
	RESTURL string `mapstructure:"rest_url" json:"rest_url,omitempty"`
	// TokenFile holds the JWT for slurmrestd (rest mode); SLURM_JWT is used
	// when empty.
	TokenFile string `mapstructure:"token_file" json:"token_file,omitempty"`
	// User is the Slurm user name sent to slurmrestd and whose jobs are
	// ours; empty: the user running SnowFlock.
	User string `mapstructure:"user" json:"user,omitempty"`
	// PollInterval is how often Events looks at the queue (default 1s).
	PollInterval time.Duration `mapstructure:"poll_interval" json:"poll_interval,omitempty"`
	// StateDir holds the record of jobs we cancelled ourselves (so that
	// Events tells them from a reclaim); set from the top-level state_dir.
	StateDir string `mapstructure:"-" json:"-"`
}

// Validate reports the first problem of a configuration.
func (c Config) Validate() error {
	switch c.Mode {
	case "", ModeCLI:
	case ModeREST:
		if c.RESTURL == "" {
			return fmt.Errorf("allocator.slurm.rest_url is empty: rest mode needs slurmrestd's URL")
		}
	default:
		return fmt.Errorf("allocator.slurm.mode %q: want cli or rest", c.Mode)
	}
	if c.RESTURL != "" {
		u, err := url.Parse(c.RESTURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("allocator.slurm.rest_url %q: want http://host:port or https://host:port", c.RESTURL)
		}
	}
	for key, v := range map[string]string{"partition": c.Partition, "account": c.Account, "user": c.User} {
		if strings.ContainsAny(v, " \t\n,|=") {
			return fmt.Errorf("allocator.slurm.%s %q: want a name without spaces, ',', '|' or '='", key, v)
		}
	}
	if c.TimeLimit < 0 || (c.TimeLimit > 0 && c.TimeLimit < time.Second) {
		return fmt.Errorf("allocator.slurm.time_limit %s: want 0 (partition default) or at least 1s", c.TimeLimit)
	}
	if c.PollInterval < 0 {
		return fmt.Errorf("allocator.slurm.poll_interval %s is negative", c.PollInterval)
	}
	return nil
}
