package ego

import (
	"fmt"
	"net/url"
	"os"
	"os/user"
	"strings"
	"time"
)

// Defaults.
const (
	// DefaultConsumer is the consumer charged when neither the request nor
	// the configuration names one.
	DefaultConsumer = "/SnowFlock"
	// DefaultResourceGroup is EGO's default resource group of compute hosts.
	DefaultResourceGroup = "ComputeHosts"
	// DefaultClientTTL is how long EGO keeps the client's allocations after
	// it was last heard from: the lease of every allocation.
	DefaultClientTTL = time.Hour
	// DefaultImmediateWait is how long an Immediate request waits for EGO's
	// first grant before giving up.
	DefaultImmediateWait = 500 * time.Millisecond
	// DefaultReclaimMargin is how long before a reclaim's deadline the
	// backend releases reclaimed slots that their holder did not.
	DefaultReclaimMargin = 2 * time.Second
	// DefaultTimeout bounds one call to EGO.
	DefaultTimeout = 30 * time.Second
)

// Config is the EGO backend's configuration (section allocator.ego).
// Credentials are a user and password (or password file), or a
// PlatformToken (or token file) such as EGO gives the services it starts.
// Passwords and tokens are never logged nor shown.
type Config struct {
	// API is how EGO is reached: "rest" (default) or "capi", EGO's C API
	// (libvem; only in builds with the egocapi tag and the EGO SDK).
	API string `mapstructure:"api" json:"api,omitempty"`
	// URL of EGO's REST service: scheme://host:port, with or without
	// /platform/rest/ego/v1. For the C API, the EGO master's address
	// (host:port), or empty for the SDK's own configuration (ego.conf).
	URL          string `mapstructure:"url" json:"url"`
	User         string `mapstructure:"user" json:"user,omitempty"`
	Password     string `mapstructure:"password" json:"-"`
	PasswordFile string `mapstructure:"password_file" json:"password_file,omitempty"`
	Token        string `mapstructure:"token" json:"-"`
	TokenFile    string `mapstructure:"token_file" json:"token_file,omitempty"`
	// Consumer charged for requests that name none (default DefaultConsumer).
	Consumer string `mapstructure:"consumer" json:"consumer"`
	// ResourceGroup slots come from (default DefaultResourceGroup).
	ResourceGroup string `mapstructure:"resource_group" json:"resource_group"`
	// ClientName is the EGO client SnowFlock registers as (default
	// snowflock-USER): every process of the same client sees the same
	// allocations.
	ClientName string `mapstructure:"client_name" json:"client_name"`
	// ClientTTL is the client's time-to-live (default DefaultClientTTL).
	ClientTTL     time.Duration `mapstructure:"client_ttl" json:"client_ttl"`
	ImmediateWait time.Duration `mapstructure:"immediate_wait" json:"immediate_wait"`
	ReclaimMargin time.Duration `mapstructure:"reclaim_margin" json:"reclaim_margin"`
	Timeout       time.Duration `mapstructure:"timeout" json:"timeout"`
	// StateDir holds the backend's record of requests in progress; set by
	// the host (the plugin's state directory).
	StateDir string `mapstructure:"-" json:"-"`
}

// Validate checks the configuration without contacting EGO.
func (c *Config) Validate() error {
	switch c.API {
	case "", "rest":
	case "capi":
		return c.validateCredentials()
	default:
		return fmt.Errorf("api %q: want rest or capi", c.API)
	}
	if c.URL == "" {
		return fmt.Errorf("url is not set: want EGO's REST address, such as https://egomaster:8543")
	}
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url %q: want http(s)://host[:port]", c.URL)
	}
	return c.validateCredentials()
}

func (c *Config) validateCredentials() error {
	hasPass := c.Password != "" || c.PasswordFile != ""
	hasToken := c.Token != "" || c.TokenFile != ""
	switch {
	case hasPass && hasToken:
		return fmt.Errorf("both a password and a token are set: choose one")
	case hasPass && c.User == "":
		return fmt.Errorf("a password is set but no user")
	case !hasPass && !hasToken:
		return fmt.Errorf("no credentials: set user and password (or password_file), or token (or token_file)")
	case c.Password != "" && c.PasswordFile != "", c.Token != "" && c.TokenFile != "":
		return fmt.Errorf("set a secret or its file, not both")
	}
	for name, d := range map[string]time.Duration{"client_ttl": c.ClientTTL, "immediate_wait": c.ImmediateWait, "reclaim_margin": c.ReclaimMargin, "timeout": c.Timeout} {
		if d < 0 {
			return fmt.Errorf("%s %s is negative", name, d)
		}
	}
	if c.ClientTTL != 0 && c.ClientTTL < time.Second {
		return fmt.Errorf("client_ttl %s is shorter than a second", c.ClientTTL)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Consumer == "" {
		c.Consumer = DefaultConsumer
	}
	if c.ResourceGroup == "" {
		c.ResourceGroup = DefaultResourceGroup
	}
	if c.ClientName == "" {
		name := "unknown"
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		c.ClientName = "snowflock-" + name
	}
	if c.ClientTTL == 0 {
		c.ClientTTL = DefaultClientTTL
	}
	if c.ImmediateWait == 0 {
		c.ImmediateWait = DefaultImmediateWait
	}
	if c.ReclaimMargin == 0 {
		c.ReclaimMargin = DefaultReclaimMargin
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// secrets reads the password or token from its file when one is named.
func (c Config) secrets() (password, token string, err error) {
	read := func(key, path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("%s %s is empty", key, path)
		}
		return s, nil
	}
	password, token = c.Password, c.Token
	if c.PasswordFile != "" {
		if password, err = read("password_file", c.PasswordFile); err != nil {
			return "", "", err
		}
	}
	if c.TokenFile != "" {
		if token, err = read("token_file", c.TokenFile); err != nil {
			return "", "", err
		}
	}
	return password, token, nil
}
