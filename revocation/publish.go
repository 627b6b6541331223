package revocation

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publish sends ev to subject and waits for JetStream to store it,
// returning its stream sequence. An event the subscribers would reject is
// refused here, before it is sent.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, ev Event) (uint64, error) {
	data, err := ev.MarshalJSON()
	if err != nil {
		return 0, fmt.Errorf("revocation: publish: %w", err)
	}
	if _, err := ParseEvent(data); err != nil {
		return 0, fmt.Errorf("revocation: publish: %w", err)
	}
	ack, err := js.Publish(ctx, subject, data)
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return 0, fmt.Errorf("revocation: publish to %q: no JetStream stream captures this subject (create the stream, or start sidegate with create_stream: true): %w", subject, err)
	case err != nil:
		return 0, fmt.Errorf("revocation: publish to %q: %w", subject, err)
	}
	return ack.Sequence, nil
}
