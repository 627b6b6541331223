// Package e2e holds the end-to-end tests of sidegate: they build the
// sidegate binary once, run it as a separate process against real servers
// (a JWKS identity provider over HTTP, nats-server, nginx and caddy, gRPC
// and HTTP clients on loopback, grpcurl) and assert what a user of the
// binary sees. See README.md.
//
// The package has no code outside its tests.
package e2e
