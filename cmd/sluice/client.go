package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sluice-media/sluice/sfu/auth"
)

// apiClient calls the daemon's HTTP API. With an API key and secret it signs a short-lived
// admin token for each call; without, it relies on open mode (loopback).
type apiClient struct {
	base   string
	key    string
	secret string
	http   *http.Client
}

func (g *globals) client() *apiClient {
	return &apiClient{base: strings.TrimRight(g.server, "/"), key: g.apiKey, secret: g.apiSecret, http: &http.Client{Timeout: 30 * time.Second}}
}

// apiError is the daemon's error body.
type apiError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	return e.Message
}

func (c *apiClient) token() (string, error) {
	if c.key == "" && c.secret == "" {
		return "", nil
	}
	if c.key == "" || c.secret == "" {
		return "", errors.New("--api-key and --api-secret go together")
	}
	now := time.Now()
	return auth.Sign(c.key, c.secret, auth.Claims{Identity: "cli", IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix(), Grants: auth.Grants{Admin: true}})
}

// do sends a request with an optional JSON body and decodes a JSON answer into out (unless nil).
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("reading the daemon's answer: %w", err)
	}
	return nil
}

// send performs the request and returns the response for a 2xx, else the daemon's error.
func (c *apiClient) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tok, err := c.token()
	if err != nil {
		return nil, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the daemon at %s (is 'sluice serve' running?): %w", c.base, unwrapURLError(err))
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var wrapper struct {
			Error *apiError `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&wrapper)
		e := wrapper.Error
		if e == nil {
			e = &apiError{}
		}
		e.Status = resp.StatusCode
		return nil, e
	}
	return resp, nil
}

func unwrapURLError(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}
