package sdk

import (
	"errors"
	"testing"
	"time"

	"github.com/snowflock/snowflock/allocator"
)

type testConfig struct {
	URL     string        `mapstructure:"url"`
	Slots   int           `mapstructure:"slots"`
	Timeout time.Duration `mapstructure:"timeout"`
	Tags    []string      `mapstructure:"tags"`
}

func (c *testConfig) Validate() error {
	if c.Slots < 0 {
		return errors.New("slots must not be negative")
	}
	return nil
}

func TestDecodeSectionAndEnvironment(t *testing.T) {
	t.Setenv("SNOWFLOCK_ALLOCATOR_MY_PLUG_SLOTS", "7")
	t.Setenv("SNOWFLOCK_ALLOCATOR_MY_PLUG_TAGS", "a, b")
	cfg, err := Decode[testConfig]("my-plug", []byte(`{"url": "http://x", "slots": 2, "timeout": "90s"}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL != "http://x" || cfg.Slots != 7 || cfg.Timeout != 90*time.Second || len(cfg.Tags) != 2 || cfg.Tags[1] != "b" {
		t.Errorf("decoded %+v", cfg)
	}
	if EnvVar("my-plug", "slots") != "SNOWFLOCK_ALLOCATOR_MY_PLUG_SLOTS" {
		t.Errorf("EnvVar = %s", EnvVar("my-plug", "slots"))
	}
	if cfg, err := Decode[testConfig]("other", nil); err != nil || cfg.Slots != 0 {
		t.Errorf("empty section: %+v, %v", cfg, err)
	}
}

func TestDecodeRefusesBadSections(t *testing.T) {
	for _, bad := range []string{`{"slotz": 1}`, `{"slots": "many"}`, `{"slots": -1}`, `[1,2]`, `{`, `{"timeout": "soon"}`} {
		if _, err := Decode[testConfig]("p", []byte(bad)); !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Errorf("Decode(%s) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

// The section comes from another process: any bytes give a configuration
// or an error, never a panic.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"url": "u", "slots": 3, "timeout": 5, "tags": ["x"]}`))
	f.Add([]byte(`{"slots": 1e400}`))
	f.Add([]byte(`{"tags": {"a": 1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Decode[testConfig]("fuzz", data)
		if err == nil && cfg.Slots < 0 {
			t.Errorf("negative slots accepted")
		}
	})
}
