package main

import (
	"context"
	"os"
	"regexp"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// rpcShape is a method as echo.proto declares it and as echoService
// serves it.
type rpcShape struct {
	name, in, out string
	serverStreams bool
}

var (
	protoPackage = regexp.MustCompile(`(?m)^package ([\w.]+);`)
	protoService = regexp.MustCompile(`(?m)^service (\w+) \{`)
	protoRPC     = regexp.MustCompile(`(?m)^\s*rpc (\w+)\(([\w.]+)\) returns \((stream )?([\w.]+)\);`)
)

// TestEchoProtoMatchesDescriptor keeps echo.proto, which tools such as ghz
// read, in step with echoService, which the server serves: the same full
// service name and, per method, the same request and response messages
// and streaming. The messages are taken from what the handlers decode and
// send, not from the descriptor, which does not name them.
func TestEchoProtoMatchesDescriptor(t *testing.T) {
	b, err := os.ReadFile("echo.proto")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	pkg, svc := protoPackage.FindStringSubmatch(src), protoService.FindStringSubmatch(src)
	if pkg == nil || svc == nil {
		t.Fatalf("echo.proto: no package or service")
	}
	if name := pkg[1] + "." + svc[1]; name != echoService.ServiceName {
		t.Errorf("echo.proto declares %s, the server serves %s", name, echoService.ServiceName)
	}
	var declared []rpcShape
	for _, m := range protoRPC.FindAllStringSubmatch(src, -1) {
		declared = append(declared, rpcShape{name: m[1], in: m[2], out: m[4], serverStreams: m[3] != ""})
	}

	var served []rpcShape
	srv := &echoServer{pid: "1"}
	for _, m := range echoService.Methods {
		var in string
		dec := func(v any) error {
			in = string(proto.MessageName(v.(proto.Message)))
			return nil
		}
		out, err := m.Handler(srv, context.Background(), dec, nil)
		if err != nil {
			t.Fatalf("%s: %v", m.MethodName, err)
		}
		served = append(served, rpcShape{name: m.MethodName, in: in, out: string(proto.MessageName(out.(proto.Message)))})
	}
	for _, s := range echoService.Streams {
		if s.ClientStreams {
			t.Fatalf("%s: client streaming is not covered by this test", s.StreamName)
		}
		st := &recordingStream{}
		if err := s.Handler(srv, st); err != nil {
			t.Fatalf("%s: %v", s.StreamName, err)
		}
		served = append(served, rpcShape{name: s.StreamName, in: st.in, out: st.out, serverStreams: s.ServerStreams})
	}
	byName := func(a, b rpcShape) int {
		if a.name < b.name {
			return -1
		}
		if a.name > b.name {
			return 1
		}
		return 0
	}
	slices.SortFunc(declared, byName)
	slices.SortFunc(served, byName)
	if !slices.Equal(declared, served) {
		t.Errorf("echo.proto declares\n\t%+v\nthe server serves\n\t%+v", declared, served)
	}
}

// recordingStream is a grpc.ServerStream that asks for one message and
// records the messages' types.
type recordingStream struct {
	grpc.ServerStream
	in, out string
}

func (s *recordingStream) Context() context.Context { return context.Background() }
func (s *recordingStream) SetTrailer(metadata.MD)   {}
func (s *recordingStream) RecvMsg(m any) error {
	s.in = string(proto.MessageName(m.(proto.Message)))
	proto.Merge(m.(proto.Message), wrapperspb.UInt32(1))
	return nil
}

func (s *recordingStream) SendMsg(m any) error {
	s.out = string(proto.MessageName(m.(proto.Message)))
	return nil
}
