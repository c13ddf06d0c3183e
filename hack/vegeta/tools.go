//go:build tools

// Package tools pins the vegeta load generator used by bench/ (constant-rate latency runs).
package tools

import _ "github.com/tsenart/vegeta/v12"
