package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Lease types accepted by lease.type.
const (
	LeaseTypeStatic = "static"
	LeaseTypeConsul = "consul"
)

// Defaults. They mirror LiteFS so existing configs behave the same way.
const (
	DefaultRetention                = 10 * time.Minute
	DefaultRetentionMonitorInterval = 1 * time.Minute
	DefaultReconnectDelay           = 1 * time.Second
	DefaultDemoteDelay              = 10 * time.Second
	DefaultConsulKey                = "litefs/primary"
	DefaultConsulTTL                = 10 * time.Second
	DefaultConsulLockDelay          = 1 * time.Second
	DefaultHTTPAddr                 = ":20202"
)

// Consul's own limits on session settings; checking them here turns a
// runtime API error into a config error at startup.
const (
	MinConsulTTL       = 10 * time.Second
	MaxConsulTTL       = 24 * time.Hour
	MaxConsulLockDelay = 60 * time.Second
)

// Config is the litefs.yml file. Keys and defaults follow LiteFS.
type Config struct {
	FUSE        FUSEConfig  `yaml:"fuse"`
	Data        DataConfig  `yaml:"data"`
	Lease       LeaseConfig `yaml:"lease"`
	HTTP        HTTPConfig  `yaml:"http"`
	ExitOnError bool        `yaml:"exit-on-error"`
	SkipSync    bool        `yaml:"skip-sync"`
}

// FUSEConfig configures the mount through which applications see databases.
type FUSEConfig struct {
	Dir        string `yaml:"dir"`
	AllowOther bool   `yaml:"allow-other"`
	Debug      bool   `yaml:"debug"`
}

// DataConfig configures where LiteFS keeps its own files (databases, LTX).
type DataConfig struct {
	Dir                      string        `yaml:"dir"`
	Retention                time.Duration `yaml:"retention"`                  // default 10m
	RetentionMonitorInterval time.Duration `yaml:"retention-monitor-interval"` // default 1m
}

// LeaseConfig configures how the primary is chosen.
type LeaseConfig struct {
	Type           string        `yaml:"type"`            // "static" or "consul"; required
	Candidate      bool          `yaml:"candidate"`       // may this node become primary?
	Hostname       string        `yaml:"hostname"`        // default os.Hostname()
	AdvertiseURL   string        `yaml:"advertise-url"`   // URL of this node's (or, for static non-candidates, the primary's) HTTP API
	ReconnectDelay time.Duration `yaml:"reconnect-delay"` // default 1s
	DemoteDelay    time.Duration `yaml:"demote-delay"`    // default 10s
	Consul         ConsulConfig  `yaml:"consul"`
}

// ConsulConfig configures the Consul lease; used only when lease.type is consul.
type ConsulConfig struct {
	URL       string        `yaml:"url"`
	Key       string        `yaml:"key"`        // default "litefs/primary"
	TTL       time.Duration `yaml:"ttl"`        // default 10s, minimum 10s (Consul's minimum)
	LockDelay time.Duration `yaml:"lock-delay"` // default 1s
}

// HTTPConfig configures the node's HTTP API, which replicas stream from.
type HTTPConfig struct {
	Addr string `yaml:"addr"` // default ":20202"
}

// NewConfig returns a Config holding every default, so that keys missing
// from the file keep a sensible value.
func NewConfig() Config {
	return Config{
		Data: DataConfig{
			Retention:                DefaultRetention,
			RetentionMonitorInterval: DefaultRetentionMonitorInterval,
		},
		Lease: LeaseConfig{
			ReconnectDelay: DefaultReconnectDelay,
			DemoteDelay:    DefaultDemoteDelay,
			Consul: ConsulConfig{
				Key:       DefaultConsulKey,
				TTL:       DefaultConsulTTL,
				LockDelay: DefaultConsulLockDelay,
			},
		},
		HTTP: HTTPConfig{Addr: DefaultHTTPAddr},
	}
}

// ParseConfig decodes a YAML config on top of NewConfig's defaults.
//
// Decoding is strict: unknown or duplicate keys, values of the wrong type
// and malformed durations are errors that name the key and its line, so a
// typo never silently falls back to a default. A key whose value is empty
// (null) keeps its default. An empty file yields the defaults.
//
// When expandEnv is true, $VAR and ${VAR} in values are replaced by
// environment variables (unset ones become ""). Expansion happens per value
// after parsing rather than on the raw text, so a variable's contents can
// never change the YAML structure and reported line numbers stay exact.
// Keys are never expanded.
func ParseConfig(data []byte, expandEnv bool) (Config, error) {
	cfg := NewConfig()

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return cfg, nil // empty or comment-only file
	} else if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}

	// A second document is almost certainly a mistake (e.g. two configs
	// pasted together); ignoring it would drop settings silently.
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		if root := documentRoot(&extra); root != nil && !isNull(root) {
			return cfg, fmt.Errorf("config line %d: multiple YAML documents are not supported", root.Line)
		}
	} else if !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config: %w", err)
	}

	root := documentRoot(&doc)
	if root == nil {
		return cfg, nil
	}
	d := decoder{expandEnv: expandEnv}
	if err := d.decodeStruct(root, reflect.ValueOf(&cfg).Elem(), ""); err != nil {
		return NewConfig(), err
	}
	return cfg, nil
}

// ReadConfigFile reads and parses the config file at path. It does not
// validate, so callers can apply command-line overrides first.
func ReadConfigFile(path string, expandEnv bool) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return NewConfig(), fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(data, expandEnv)
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// configSearchPaths is the order FindConfigPath looks in. A variable so
// tests need not depend on /etc.
var configSearchPaths = []string{"litefs.yml", "/etc/litefs.yml"}

// FindConfigPath returns the first config file that exists: ./litefs.yml,
// then /etc/litefs.yml. A path that exists but cannot be checked (e.g.
// permission denied) or is a directory is an error rather than skipped,
// since falling through to another file would hide the problem.
func FindConfigPath() (string, error) {
	for _, path := range configSearchPaths {
		fi, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return "", fmt.Errorf("find config: %w", err)
		}
		if fi.IsDir() {
			return "", fmt.Errorf("find config: %s is a directory", path)
		}
		return path, nil
	}

	searched := make([]string, len(configSearchPaths))
	for i, path := range configSearchPaths {
		if !filepath.IsAbs(path) {
			path = "./" + path
		}
		searched[i] = path
	}
	return "", fmt.Errorf("no config file found; searched %s", strings.Join(searched, ", "))
}

// Normalize fills in values that can only be computed at run time:
// fuse.dir and data.dir become absolute, cleaned paths (the mount and the
// store may run with a different working directory than the one the config
// was read in) and lease.hostname defaults to os.Hostname(). It is
// idempotent; Validate calls it, so callers need not.
func (c *Config) Normalize() error {
	if c.FUSE.Dir != "" {
		dir, err := filepath.Abs(c.FUSE.Dir)
		if err != nil {
			return fmt.Errorf("fuse.dir: %w", err)
		}
		c.FUSE.Dir = dir
	}
	if c.Data.Dir != "" {
		dir, err := filepath.Abs(c.Data.Dir)
		if err != nil {
			return fmt.Errorf("data.dir: %w", err)
		}
		c.Data.Dir = dir
	}
	if c.Lease.Hostname == "" {
		hostname, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("lease.hostname not set and cannot read hostname: %w", err)
		}
		c.Lease.Hostname = hostname
	}
	return nil
}

// Validate normalizes c (see Normalize) and then checks it, returning the
// first problem found. Messages name the offending key as written in the
// file so users can fix it without reading code.
func (c *Config) Validate() error {
	if err := c.Normalize(); err != nil {
		return err
	}
	if err := c.validateDirs(); err != nil {
		return err
	}

	if c.Data.Retention <= 0 {
		return fmt.Errorf("data.retention must be greater than zero, got %s", c.Data.Retention)
	}
	if c.Data.RetentionMonitorInterval <= 0 {
		return fmt.Errorf("data.retention-monitor-interval must be greater than zero, got %s", c.Data.RetentionMonitorInterval)
	}

	if err := c.validateLease(); err != nil {
		return err
	}
	if err := validateAddr(c.HTTP.Addr); err != nil {
		return fmt.Errorf("http.addr %q is invalid: %w", c.HTTP.Addr, err)
	}
	return nil
}

// validateDirs rejects overlapping directories: the store owns everything
// under data.dir, and a data.dir inside the mount would be served through
// (and recurse into) the filesystem it backs.
func (c *Config) validateDirs() error {
	if c.FUSE.Dir == "" {
		return errors.New("fuse.dir is required")
	}
	if c.Data.Dir == "" {
		return errors.New("data.dir is required")
	}
	if c.FUSE.Dir == c.Data.Dir {
		return fmt.Errorf("fuse.dir and data.dir must be different directories, both are %q", c.FUSE.Dir)
	}
	if isWithin(c.FUSE.Dir, c.Data.Dir) {
		return fmt.Errorf("data.dir %q must not be inside fuse.dir %q", c.Data.Dir, c.FUSE.Dir)
	}
	if isWithin(c.Data.Dir, c.FUSE.Dir) {
		return fmt.Errorf("fuse.dir %q must not be inside data.dir %q", c.FUSE.Dir, c.Data.Dir)
	}
	return nil
}

func (c *Config) validateLease() error {
	l := &c.Lease
	if l.ReconnectDelay < 0 {
		return fmt.Errorf("lease.reconnect-delay must not be negative, got %s", l.ReconnectDelay)
	}
	if l.DemoteDelay < 0 {
		return fmt.Errorf("lease.demote-delay must not be negative, got %s", l.DemoteDelay)
	}

	switch l.Type {
	case "":
		return errors.New("lease.type is required (static or consul)")

	case LeaseTypeStatic:
		// A static primary is fixed by config, so replicas must be told
		// where it is; the primary itself may leave advertise-url unset.
		if l.AdvertiseURL == "" {
			if !l.Candidate {
				return errors.New("lease.advertise-url is required when lease.type is static and lease.candidate is false: set it to the primary's URL, e.g. http://primary:20202")
			}
			return nil
		}
		if err := validateHTTPURL(l.AdvertiseURL); err != nil {
			return fmt.Errorf("lease.advertise-url %q is invalid: %w", l.AdvertiseURL, err)
		}
		return nil

	case LeaseTypeConsul:
		cc := &l.Consul
		if cc.URL == "" {
			return errors.New("lease.consul.url is required when lease.type is consul")
		}
		if err := validateHTTPURL(cc.URL); err != nil {
			return fmt.Errorf("lease.consul.url %q is invalid: %w", cc.URL, err)
		}
		// Other nodes find the primary through the URL it writes to Consul.
		if l.AdvertiseURL == "" {
			return errors.New("lease.advertise-url is required when lease.type is consul: set it to this node's URL as other nodes reach it, e.g. http://node1:20202")
		}
		if err := validateHTTPURL(l.AdvertiseURL); err != nil {
			return fmt.Errorf("lease.advertise-url %q is invalid: %w", l.AdvertiseURL, err)
		}
		if strings.Trim(cc.Key, "/") == "" {
			return errors.New("lease.consul.key must not be empty")
		}
		if cc.TTL < MinConsulTTL || cc.TTL > MaxConsulTTL {
			return fmt.Errorf("lease.consul.ttl must be between %s and %s (Consul's limits), got %s", MinConsulTTL, MaxConsulTTL, cc.TTL)
		}
		if cc.LockDelay < 0 || cc.LockDelay > MaxConsulLockDelay {
			return fmt.Errorf("lease.consul.lock-delay must be between 0s and %s (Consul's limits), got %s", MaxConsulLockDelay, cc.LockDelay)
		}
		return nil

	default:
		return fmt.Errorf("lease.type %q is invalid: must be %q or %q", l.Type, LeaseTypeStatic, LeaseTypeConsul)
	}
}

// isWithin reports whether child is strictly below parent. Both must be
// clean absolute paths.
func isWithin(parent, child string) bool {
	rel, err := filepath.Rel(parent, child)
	if err != nil || rel == "." {
		return false
	}
	return rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// validateHTTPURL accepts only absolute http(s) URLs with a host, since
// the value is dialed by other processes.
func validateHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an absolute http:// or https:// URL")
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("missing host")
	}
	if port := u.Port(); port != "" {
		if err := validatePort(port); err != nil {
			return err
		}
	}
	return nil
}

// validateAddr checks a listen address of the form [host]:port.
func validateAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port, e.g. \":20202\": %w", err)
	}
	return validatePort(port)
}

func validatePort(port string) error {
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q must be a number from 0 to 65535", port)
	}
	return nil
}

// decoder maps a yaml.Node tree onto the config structs by their yaml
// tags. It exists instead of yaml.v3's KnownFields because that reports
// only the first problem in a terse, Go-typed wording ("cannot unmarshal
// !!str into time.Duration") and cannot expand env vars per value.
type decoder struct {
	expandEnv bool
}

var durationType = reflect.TypeFor[time.Duration]()

// decodeStruct decodes mapping node n into struct v. path is the dotted key
// path of v ("" for the top level) used in messages.
func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	n = resolveAlias(n)
	if isNull(n) {
		return nil // "fuse:" with nothing under it keeps the defaults
	}
	if n.Kind != yaml.MappingNode {
		if path == "" {
			return fmt.Errorf("config line %d: top level must be a mapping of keys, got %s", n.Line, kindName(n))
		}
		return fmt.Errorf("config line %d: %q must be a mapping of keys, got %s", n.Line, path, kindName(n))
	}

	t := v.Type()
	fields := make(map[string]int, t.NumField())
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		fields[name] = i
		names = append(names, name)
	}

	seen := make(map[string]int) // key -> line first seen
	for i := 0; i+1 < len(n.Content); i += 2 {
		keyNode, valNode := resolveAlias(n.Content[i]), n.Content[i+1]
		if keyNode.Kind != yaml.ScalarNode {
			return fmt.Errorf("config line %d: keys%s must be plain names, got %s", keyNode.Line, inPath(path), kindName(keyNode))
		}
		key := keyNode.Value
		if key == "<<" {
			return fmt.Errorf("config line %d: merge keys (<<) are not supported%s", keyNode.Line, inPath(path))
		}
		idx, ok := fields[key]
		if !ok {
			return fmt.Errorf("config line %d: unknown key %q%s (valid keys: %s)", keyNode.Line, key, inPath(path), strings.Join(names, ", "))
		}
		full := key
		if path != "" {
			full = path + "." + key
		}
		if first, dup := seen[key]; dup {
			return fmt.Errorf("config line %d: duplicate key %q (first set on line %d)", keyNode.Line, full, first)
		}
		seen[key] = keyNode.Line

		if err := d.decodeValue(valNode, v.Field(idx), full); err != nil {
			return err
		}
	}
	return nil
}

// decodeValue decodes n into field v, the value of key path.
func (d *decoder) decodeValue(n *yaml.Node, v reflect.Value, path string) error {
	n = resolveAlias(n)
	if v.Kind() == reflect.Struct {
		return d.decodeStruct(n, v, path)
	}
	if isNull(n) {
		return nil // "key:" with no value keeps the default, as in yaml.v3
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("config line %d: %q must be a single value, got %s", n.Line, path, kindName(n))
	}
	s := n.Value
	if d.expandEnv {
		s = os.ExpandEnv(s)
	}

	switch {
	case v.Type() == durationType:
		// A bare integer is rejected by ParseDuration ("missing unit"),
		// which is what we want: "ttl: 10" is ambiguous.
		dur, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("config line %d: invalid duration %q for %q: use a Go duration such as \"10s\" or \"1m\"", n.Line, s, path)
		}
		v.SetInt(int64(dur))
	case v.Kind() == reflect.Bool:
		b, ok := parseBool(strings.TrimSpace(s))
		if !ok {
			return fmt.Errorf("config line %d: invalid boolean %q for %q: use true or false", n.Line, s, path)
		}
		v.SetBool(b)
	case v.Kind() == reflect.String:
		v.SetString(s)
	default:
		// Only reachable if a field of a new type is added to Config.
		return fmt.Errorf("config line %d: %q: unsupported field type %s", n.Line, path, v.Type())
	}
	return nil
}

// parseBool accepts YAML 1.2 booleans plus the YAML 1.1 spellings that
// yaml.v3 also accepts for bool fields, so configs written for LiteFS keep
// working.
func parseBool(s string) (value, ok bool) {
	switch s {
	case "true", "True", "TRUE", "y", "Y", "yes", "Yes", "YES", "on", "On", "ON":
		return true, true
	case "false", "False", "FALSE", "n", "N", "no", "No", "NO", "off", "Off", "OFF":
		return false, true
	}
	return false, false
}

// documentRoot returns the content of a document node, or nil if empty.
func documentRoot(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil
		}
		return doc.Content[0]
	}
	if doc.Kind == 0 {
		return nil
	}
	return doc
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func inPath(path string) string {
	if path == "" {
		return ""
	}
	return fmt.Sprintf(" in %q", path)
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	default:
		return "an unexpected node"
	}
}
