// Package netguard is the address policy of the daemon's outbound connections to addresses a
// user typed (camera pulls, broadcasts): it is applied at dial time, after DNS resolution, so a
// name that resolves to a refused address is refused too. Link-local and cloud metadata
// addresses and the daemon's own ports are always refused; loopback and private ranges are
// configurable. Dial errors do not tell a closed port from a filtered one.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

// Config is the `outbound:` section.
type Config struct {
	// AllowLoopback lets pulls and broadcasts reach 127.0.0.0/8 and ::1 (a camera proxy on the
	// same host); the daemon's own ports stay refused.
	AllowLoopback bool `yaml:"allow_loopback"`
	// AllowPrivate lets them reach RFC 1918 and RFC 4193 addresses (cameras on a LAN).
	AllowPrivate bool `yaml:"allow_private"`
	// Deny are more addresses or CIDR prefixes to refuse.
	Deny []string `yaml:"deny"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config { return Config{AllowPrivate: true} }

// Validate reports the first invalid value.
func (c Config) Validate() error {
	for i, d := range c.Deny {
		if _, err := ParsePrefix(d); err != nil {
			return fmt.Errorf("deny.%d: %w", i, err)
		}
	}
	return nil
}

// ErrRefused is the error of a dial to an address the policy refuses.
var ErrRefused = errors.New("address not allowed by the outbound policy")

// ErrUnreachable is the error of a dial that failed: refused, reset, timed out or unroutable
// alike, so that errors shown to API users do not map which ports are open.
var ErrUnreachable = errors.New("could not connect")

// Policy decides which addresses outbound connections may reach. Safe for concurrent use once
// built.
type Policy struct {
	cfg       Config
	deny      []netip.Prefix
	selfPorts []int
	local     func() []netip.Addr
}

// New returns the policy of cfg; selfPorts are the daemon's listening ports, refused on any
// address of this host.
func New(cfg Config, selfPorts ...int) *Policy {
	p := &Policy{cfg: cfg, selfPorts: selfPorts, local: localAddrs}
	for _, d := range cfg.Deny {
		if pr, err := ParsePrefix(d); err == nil {
			p.deny = append(p.deny, pr)
		}
	}
	return p
}

var metadataV6 = netip.MustParseAddr("fd00:ec2::254")

// LinkLocalOrMetadata reports the addresses no outbound connection of the daemon reaches:
// IPv4 and IPv6 link-local (cloud metadata services live at 169.254.169.254) and the AWS IPv6
// metadata address.
func LinkLocalOrMetadata(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip == metadataV6
}

// Allowed reports whether the policy lets a connection reach ap.
func (p *Policy) Allowed(ap netip.AddrPort) bool {
	ip := ap.Addr().Unmap()
	switch {
	case LinkLocalOrMetadata(ip), ip.IsUnspecified(), ip.IsMulticast():
		return false
	case ip.IsLoopback() && !p.cfg.AllowLoopback:
		return false
	case ip.IsPrivate() && !p.cfg.AllowPrivate:
		return false
	}
	for _, d := range p.deny {
		if d.Contains(ip) {
			return false
		}
	}
	if slices.Contains(p.selfPorts, int(ap.Port())) && (ip.IsLoopback() || slices.Contains(p.local(), ip)) {
		return false
	}
	return true
}

// Control is a net.Dialer Control function that refuses what the policy does not allow.
func (p *Policy) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrRefused, address)
	}
	if !p.Allowed(ap) {
		return fmt.Errorf("%w: %s", ErrRefused, ap.Addr().Unmap())
	}
	return nil
}

// DialContext dials through the policy. Its errors are ErrRefused for a refused address and
// ErrUnreachable, with the address but without the cause, for every other failure.
func (p *Policy) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second, Control: p.Control}
	c, err := d.DialContext(ctx, network, address)
	if err == nil {
		return c, nil
	}
	if errors.Is(err, ErrRefused) {
		var ap netip.AddrPort
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Addr != nil {
			ap, _ = netip.ParseAddrPort(opErr.Addr.String())
		}
		return nil, &DialError{Addr: address, refused: true, ip: ap.Addr().Unmap(), cause: err}
	}
	return nil, &DialError{Addr: address, cause: err}
}

// DialError is a failed outbound dial. Its message names the address and, for a refusal, the
// policy; never the network's reason (refused, reset, timeout), which Cause keeps for logs.
type DialError struct {
	Addr    string
	refused bool
	ip      netip.Addr
	cause   error
}

func (e *DialError) Error() string {
	if e.refused {
		if e.ip.IsValid() {
			return fmt.Sprintf("%s (%s) is not allowed by the outbound policy", e.Addr, e.ip)
		}
		return e.Addr + " is not allowed by the outbound policy"
	}
	return "could not connect to " + e.Addr
}

// Is makes errors.Is(err, ErrRefused / ErrUnreachable) work.
func (e *DialError) Is(target error) bool {
	return (e.refused && target == ErrRefused) || (!e.refused && target == ErrUnreachable)
}

// Cause returns the network's reason, for logs.
func (e *DialError) Cause() error { return e.cause }

// ParsePrefix parses an address ("10.0.0.5") or a CIDR prefix ("10.0.0.0/8").
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR prefix", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// localAddrs returns the addresses of this host's interfaces.
func localAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if pfx, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, pfx.Addr().Unmap())
		}
	}
	return out
}
