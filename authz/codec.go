package authz

import (
	"fmt"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protov2 "google.golang.org/protobuf/proto"
)

// checkCodec is the codec of sidegate's gRPC server: gRPC's proto codec,
// except that a CheckRequest is decoded by decodeCheckRequest.
//
// The generated decoder fills the request's header map through
// reflection, one reflect.Value and converted string per key and value:
// with Envoy's ~15 headers, that was 15% of sidegate's CPU with unique
// tokens and more with cached ones, more than anything but the signature.
// decodeCheckRequest decodes what every check reads (the HTTP request and
// the context extensions) directly, and hands each other field to the
// generated decoder, so the result is the same message, field for field,
// unknown fields included, and the same bytes are refused.
//
// Each field left to the generated decoder costs one call of it: a
// request of nothing but tiny unknown fields decodes about 2.5 times
// slower than with proto.Unmarshal (0.25 s of CPU for 8 MiB, the largest
// request the server takes, against 0.1 s), still linear in its size.
type checkCodec struct{}

var protoCodec = encoding.GetCodecV2(proto.Name)

func (checkCodec) Name() string { return proto.Name }

func (checkCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (checkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*authv3.CheckRequest)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	// Every string is copied out of data, which gRPC reuses once this
	// returns. A request in one buffer is read in place.
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return decodeCheckRequest(buf.ReadOnlyData(), req)
}

// decodeCheckRequest sets m to the CheckRequest encoded in b, as
// proto.Unmarshal does.
func decodeCheckRequest(b []byte, m *authv3.CheckRequest) error {
	protov2.Reset(m)
	return eachField(b, m, 0, func(num protowire.Number, v []byte) (bool, error) {
		if num != 1 { // attributes
			return false, nil
		}
		return true, into(&m.Attributes, v, decodeAttributes)
	})
}

// into merges the message encoded in v into *dst with decode, making
// *dst first: a message field sent twice merges into one.
func into[M any](dst **M, v []byte, decode func([]byte, *M) error) error {
	if *dst == nil {
		*dst = new(M)
	}
	return decode(v, *dst)
}

// decodeAttributes merges the AttributeContext encoded in b into m.
func decodeAttributes(b []byte, m *authv3.AttributeContext) error {
	return eachField(b, m, 1, func(num protowire.Number, v []byte) (bool, error) {
		switch num {
		case 4: // request
			return true, into(&m.Request, v, decodeRequest)
		case 10: // context_extensions
			if m.ContextExtensions == nil {
				m.ContextExtensions = make(map[string]string, 1)
			}
			return true, decodeMapEntry(v, m.ContextExtensions, "context_extensions")
		}
		return false, nil
	})
}

// decodeRequest merges the AttributeContext.Request encoded in b into m.
func decodeRequest(b []byte, m *authv3.AttributeContext_Request) error {
	return eachField(b, m, 2, func(num protowire.Number, v []byte) (bool, error) {
		if num != 2 { // http
			return false, nil
		}
		return true, into(&m.Http, v, decodeHTTP)
	})
}

// decodeHTTP merges the AttributeContext.HttpRequest encoded in b into m.
// Its size (field 9), a varint, and its header_map (13) go to the
// generated decoder, like any field of the wrong wire type.
func decodeHTTP(b []byte, m *authv3.AttributeContext_HttpRequest) error {
	return eachField(b, m, 3, func(num protowire.Number, v []byte) (bool, error) {
		var dst *string
		switch num {
		case 1:
			dst = &m.Id
		case 2:
			dst = &m.Method
		case 3:
			if m.Headers == nil {
				m.Headers = make(map[string]string, 16)
			}
			return true, decodeMapEntry(v, m.Headers, "headers")
		case 4:
			dst = &m.Path
		case 5:
			dst = &m.Host
		case 6:
			dst = &m.Scheme
		case 7:
			dst = &m.Query
		case 8:
			dst = &m.Fragment
		case 10:
			dst = &m.Protocol
		case 11:
			dst = &m.Body
		case 12:
			m.RawBody = append([]byte(nil), v...)
			return true, nil
		default:
			return false, nil
		}
		s, err := utf8String(v, num)
		*dst = s
		return true, err
	})
}

// decodeMapEntry adds the map<string, string> entry encoded in b to m. As
// in the generated decoder, a missing key or value is "", a repeated one
// is the last, other fields are skipped, and a later entry with the same
// key replaces an earlier one.
func decodeMapEntry(b []byte, m map[string]string, field string) error {
	var key, val []byte
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return parseError(n)
			}
			// Each occurrence must be UTF-8, not only the last.
			if !utf8.Valid(v) {
				return fmt.Errorf("authz: CheckRequest: map field %s holds invalid UTF-8", field)
			}
			if num == 1 {
				key = v
			} else {
				val = v
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return parseError(n)
		}
		b = b[n:]
	}
	m[intern(key)] = string(val)
	return nil
}

// commonStrings are the header names (HTTP/2's static table, Envoy's and
// tracing's own) and the methods, schemes and protocols that nearly every
// request carries: decoded, they are these strings instead of new ones.
var commonStrings = func() map[string]string {
	m := map[string]string{}
	for _, s := range []string{
		":authority", ":method", ":path", ":scheme", ":status", ":protocol",
		"accept", "accept-charset", "accept-encoding", "accept-language", "accept-ranges",
		"access-control-allow-origin", "age", "allow", "authorization", "cache-control",
		"content-disposition", "content-encoding", "content-language", "content-length",
		"content-location", "content-range", "content-type", "cookie", "date", "etag",
		"expect", "expires", "from", "host", "if-match", "if-modified-since",
		"if-none-match", "if-range", "if-unmodified-since", "last-modified", "link",
		"location", "max-forwards", "origin", "pragma", "priority", "proxy-authorization",
		"range", "referer", "refresh", "retry-after", "sec-fetch-dest", "sec-fetch-mode",
		"sec-fetch-site", "sec-fetch-user", "te", "traceparent", "tracestate",
		"transfer-encoding", "upgrade-insecure-requests", "user-agent", "via",
		"x-b3-parentspanid", "x-b3-sampled", "x-b3-spanid", "x-b3-traceid", "b3",
		"x-envoy-attempt-count", "x-envoy-expected-rq-timeout-ms", "x-envoy-external-address",
		"x-envoy-internal", "x-envoy-original-path", "x-forwarded-client-cert",
		"x-forwarded-for", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto",
		"x-real-ip", "x-request-id", "x-csrf-token", "x-requested-with",
		"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
		"http", "https", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3",
	} {
		m[s] = s
	}
	return m
}()

// intern returns b as a string, one of commonStrings if it is one.
func intern(b []byte) string {
	if len(b) > len("x-envoy-expected-rq-timeout-ms") {
		return string(b) // no common string is longer: no need to hash it
	}
	if s, ok := commonStrings[string(b)]; ok {
		return s
	}
	return string(b)
}

// utf8String returns the proto3 string field num's value v as a string;
// like the generated decoder, it refuses invalid UTF-8.
func utf8String(v []byte, num protowire.Number) (string, error) {
	if !utf8.Valid(v) {
		return "", fmt.Errorf("authz: CheckRequest: string field %d holds invalid UTF-8", num)
	}
	return intern(v), nil
}

// consumeTag is protowire.ConsumeTag, but refuses, as the generated
// decoder does, field numbers above protowire.MaxValidNumber.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, 0, parseError(n)
	}
	if num > protowire.MaxValidNumber {
		return 0, 0, 0, fmt.Errorf("authz: CheckRequest: field number %d is out of range", num)
	}
	return num, typ, n, nil
}

func parseError(n int) error {
	return fmt.Errorf("authz: CheckRequest: %w", protowire.ParseError(n))
}

// mergeField is the generated decoder for one field at nesting depth
// (CheckRequest's own fields are at 0): it merges the encoded field (tag
// and value) into m as proto.Unmarshal does when it meets that field,
// with what is left of proto.Unmarshal's recursion limit at that depth,
// so that a request nested too deep is refused here too.
var mergeField = func() (opts [4]protov2.UnmarshalOptions) {
	for depth := range opts {
		opts[depth] = protov2.UnmarshalOptions{Merge: true, RecursionLimit: protowire.DefaultRecursionLimit - depth}
	}
	return opts
}()

// eachField walks the fields of the message encoded in b, m at nesting
// depth. A length-delimited field goes to own with its contents; own
// returns whether it decoded the field. Every other field, and every one
// own declines, is merged into m by the generated decoder.
func eachField(b []byte, m protov2.Message, depth int, own func(protowire.Number, []byte) (bool, error)) error {
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		size := protowire.ConsumeFieldValue(num, typ, b[n:])
		if size < 0 {
			return parseError(size)
		}
		field := b[:n+size]
		b = b[n+size:]
		if typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(field[n:])
			done, err := own(num, v)
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		if err := mergeField[depth].Unmarshal(field, m); err != nil {
			return err
		}
	}
	return nil
}
