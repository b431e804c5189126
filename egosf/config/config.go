// Package config loads SnowFlock's configuration: the file named by --config,
// else $SNOWFLOCK_CONFIG, else /etc/snowflock/snowflock.yaml, else the
// built-in default; SNOWFLOCK_* environment variables override file values.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// EnvConfig names the environment variable that points at the config file.
const EnvConfig = "SNOWFLOCK_CONFIG"

// SystemFile is the configuration file read when none is named.
const SystemFile = "/etc/snowflock/snowflock.yaml"

// BuiltinSource is Config.Source when no file was read.
const BuiltinSource = "built-in default"

// maxFileSize caps the configuration file read.
const maxFileSize = 1 << 20

// Config is SnowFlock's configuration.
type Config struct {
	// StateDir holds durable state (allocations, VM records).
	StateDir  string    `mapstructure:"state_dir" json:"state_dir"`
	Allocator Allocator `mapstructure:"allocator" json:"allocator"`
	// Sfld is the sfld daemon's section, undecoded: sfld decodes and
	// checks it (and its hypervisor backend's sub-section) itself.
	Sfld map[string]any `mapstructure:"sfld" json:"sfld,omitempty"`
	// Source says where the configuration came from: a file path or
	// BuiltinSource.
	Source string `mapstructure:"-" json:"source"`
}

// Allocator selects the allocator backend and holds every backend's section,
// undecoded: each backend decodes and checks its own (allocator/builtin).
type Allocator struct {
	Backend string `mapstructure:"backend" json:"backend"`
	// PluginPath lists the directories searched for allocator plugin
	// binaries (sfalloc-plugin-NAME); empty means the default
	// (allocator/loader.DefaultPluginPath).
	PluginPath []string       `mapstructure:"plugin_path" json:"plugin_path,omitempty"`
	Sections   map[string]any `mapstructure:",remain" json:"sections,omitempty"`
}

// Section returns the configuration section of backend name (nil if absent).
func (a Allocator) Section(name string) map[string]any {
	m, _ := a.Sections[name].(map[string]any)
	return m
}

// Options control Load.
type Options struct {
	// File is an explicitly named file (--config); it must exist.
	File string
	// SystemFile overrides SystemFile (tests).
	SystemFile string
	// EnvKeys are the dotted keys, besides state_dir, allocator.backend and
	// allocator.plugin_path,
	// that SNOWFLOCK_* variables may set (allocator.static.placement is
	// SNOWFLOCK_ALLOCATOR_STATIC_PLACEMENT).
	EnvKeys []string
}

// DefaultStateDir is /var/lib/snowflock for root, else
// $XDG_STATE_HOME/snowflock (~/.local/state/snowflock).
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/snowflock"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "snowflock")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "snowflock")
	}
	return filepath.Join(os.TempDir(), "snowflock-"+fmt.Sprint(os.Geteuid()))
}

// Load finds, reads and parses the configuration.
func Load(o Options) (*Config, error) {
	path, explicit := o.File, o.File != ""
	if !explicit {
		if p := os.Getenv(EnvConfig); p != "" {
			path, explicit = p, true
		}
	}
	if !explicit {
		path = SystemFile
		if o.SystemFile != "" {
			path = o.SystemFile
		}
	}
	data, err := readFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		return Parse(nil, BuiltinSource, o)
	case err != nil:
		return nil, err
	}
	return Parse(data, path, o)
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("config file %s: larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

// Parse parses YAML configuration text from source (a file name, for
// messages), then applies environment overrides.
func Parse(data []byte, source string, o Options) (cfg *Config, err error) {
	// viper and mapstructure can panic on odd shapes; a bad file must be an
	// error, never a crash.
	defer func() {
		if r := recover(); r != nil {
			cfg, err = nil, fmt.Errorf("config %s: malformed: %v", source, r)
		}
	}()
	v := viper.New()
	v.SetConfigType("yaml")
	v.SetDefault("state_dir", DefaultStateDir())
	v.SetDefault("allocator.backend", "static")
	v.SetEnvPrefix("SNOWFLOCK")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	for _, k := range append([]string{"state_dir", "allocator.backend", "allocator.plugin_path"}, o.EnvKeys...) {
		if err := v.BindEnv(k); err != nil {
			return nil, fmt.Errorf("config: binding %s: %w", k, err)
		}
	}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("config %s: %s", source, strings.Join(strings.Fields(err.Error()), " "))
		}
	}
	var c Config
	if err := Decode(v.AllSettings(), &c); err != nil {
		return nil, fmt.Errorf("config %s: %w", source, err)
	}
	c.Source = source
	for name, sec := range c.Allocator.Sections {
		if sec != nil && reflect.TypeOf(sec).Kind() != reflect.Map {
			return nil, fmt.Errorf("config %s: allocator.%s must be a mapping, not %T", source, name, sec)
		}
	}
	if c.StateDir == "" {
		return nil, fmt.Errorf("config %s: state_dir is empty", source)
	}
	if c.Allocator.Backend == "" {
		return nil, fmt.Errorf("config %s: allocator.backend is empty", source)
	}
	return &c, nil
}

// Decode decodes a configuration section (maps from YAML or viper) into
// out, a pointer to a struct with mapstructure tags. Unknown keys are errors.
// Types are strict, except that text (from environment variables) converts
// to integers, booleans, comma-separated string lists and types that
// implement encoding.TextUnmarshaler; durations are Go text ("30s", "5m")
// or whole seconds, as on the command line. Errors are one line.
func Decode(in any, out any) error {
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:      out,
		ErrorUnused: true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			durationHook,
			mapstructure.TextUnmarshallerHookFunc(),
			textHook,
		),
	})
	if err != nil {
		return err
	}
	if err := dec.Decode(in); err != nil {
		return errors.New(cleanDecodeError(err))
	}
	return nil
}

var durationType = reflect.TypeFor[time.Duration]()

// durationHook decodes durations from Go text or whole seconds.
func durationHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	var secs int64
	switch v := data.(type) {
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil {
				return nil, fmt.Errorf("%q is not a duration: want 30s, 5m, 1h30m or whole seconds", v)
			}
			return d, nil
		}
		secs = n
	case int:
		secs = int64(v)
	case int64:
		secs = v
	case uint64:
		if v > math.MaxInt64 {
			return nil, fmt.Errorf("%d seconds is too long", v)
		}
		secs = int64(v)
	default:
		return data, nil
	}
	if secs < 0 || secs > math.MaxInt64/int64(time.Second) {
		return nil, fmt.Errorf("%d seconds is out of range", secs)
	}
	return time.Duration(secs) * time.Second, nil
}

// textHook converts text (environment variables) to integers, booleans and
// comma-separated string lists.
func textHook(from reflect.Type, to reflect.Type, data any) (any, error) {
	if f, ok := data.(float64); ok && to.Kind() >= reflect.Int && to.Kind() <= reflect.Int64 {
		// YAML reads 1.5 and numbers past int64 as floats.
		if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
			return nil, fmt.Errorf("%v is not a whole number in range", f)
		}
		return int64(f), nil
	}
	if from.Kind() != reflect.String {
		return data, nil
	}
	text := strings.TrimSpace(data.(string))
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(text, 10, to.Bits())
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", data)
		}
		return n, nil
	case reflect.Bool:
		b, err := strconv.ParseBool(text)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", data)
		}
		return b, nil
	case reflect.Slice:
		if to.Elem().Kind() == reflect.String {
			var out []string
			for part := range strings.SplitSeq(text, ",") {
				if part = strings.TrimSpace(part); part != "" {
					out = append(out, part)
				}
			}
			return out, nil
		}
	}
	return data, nil
}

// cleanDecodeError turns mapstructure's multi-line report into one line
// that names keys, not Go types.
func cleanDecodeError(err error) string {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	msg = strings.TrimPrefix(msg, "decoding failed due to the following error(s): ")
	if i := strings.Index(msg, "' has invalid keys: "); i >= 0 && strings.HasPrefix(msg, "'") {
		msg = "unknown key(s): " + msg[i+len("' has invalid keys: "):]
	}
	return msg
}
