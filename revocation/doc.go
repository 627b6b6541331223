// Package revocation will hold the revocation denylist (a bloom filter in
// front of exact sets) and its NATS JetStream feed. It is empty until that
// work lands; authz already declares the Denylist interface it will fill.
package revocation
