package main

import (
	"errors"
	"fmt"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// answer is what the bench reads of a CheckResponse: its status.
type answer struct {
	code    int32
	message string // of a non-OK status only
}

// Field numbers read from envoy.service.auth.v3.CheckResponse and
// google.rpc.Status.
const (
	checkResponseStatus protowire.Number = 1
	statusCode          protowire.Number = 1
	statusMessage       protowire.Number = 2
)

// answerCodec is the bench client's gRPC codec. Requests are marshalled
// by gRPC's own proto codec. An answer is read, by default, for its
// status alone, straight from the wire: the client shares the machine's
// cores with the servers, and a full decode of sidegate's identity
// headers (about 17 allocations and a 500-byte payload header) would
// cost it CPU that the floor's empty OK does not, which the servers
// would then lack. With full set, every answer is decoded into a
// CheckResponse as a generated client would (sidegate bench --decode full).
type answerCodec struct{ full bool }

var protoCodec = encoding.GetCodecV2(proto.Name)

func (answerCodec) Name() string { return proto.Name }

func (answerCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (c answerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	a, ok := v.(*answer)
	if !ok {
		return fmt.Errorf("bench: cannot read an answer into %T", v)
	}
	if c.full {
		var resp authv3.CheckResponse
		if err := protoCodec.Unmarshal(data, &resp); err != nil {
			return err
		}
		*a = answer{code: resp.GetStatus().GetCode()}
		if a.code != 0 {
			a.message = resp.GetStatus().GetMessage()
		}
		return nil
	}
	// An answer in one buffer is read in place.
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return readAnswer(buf.ReadOnlyData(), a)
}

// readAnswer sets a from the encoded CheckResponse b, reading its status
// and stepping over every other field. As in proto.Unmarshal, a field of
// the wrong wire type is an unknown field, and broken framing, a field
// number out of range or a status message that is not UTF-8 is an error.
// What lies inside the fields it steps over is not checked: the bench
// reads the status, and proto.Unmarshal refuses some answers it takes.
func readAnswer(b []byte, a *answer) error {
	*a = answer{}
	var msg []byte
	readStatus := func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch {
		case num == statusCode && typ == protowire.VarintType:
			x, _ := protowire.ConsumeVarint(v)
			a.code = int32(x)
		case num == statusMessage && typ == protowire.BytesType:
			msg = v
		}
		return nil
	}
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != checkResponseStatus || typ != protowire.BytesType {
			return nil
		}
		// A status sent twice is merged into one, as proto.Unmarshal does.
		return eachField(v, readStatus)
	})
	if err != nil {
		return err
	}
	if !utf8.Valid(msg) {
		return errors.New("bench: the answer's status message is not UTF-8")
	}
	if a.code != 0 {
		a.message = string(msg)
	}
	return nil
}

// eachField calls f with each field of the encoded message b: its number,
// wire type, and value (a varint's encoding, or a length-delimited
// field's contents).
func eachField(b []byte, f func(protowire.Number, protowire.Type, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("bench: field number %d in an answer is out of range", num)
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		v := b[:n]
		if typ == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(v)
		}
		if err := f(num, typ, v); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
