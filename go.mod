module github.com/hyperfeed/hyperfeed

go 1.26.0

require (
	github.com/flynn/noise v1.1.0
	github.com/hashicorp/go-msgpack/v2 v2.1.5
	github.com/libp2p/zeroconf/v2 v2.2.0
	github.com/stretchr/testify v1.12.1
	go.uber.org/goleak v1.3.0
	golang.org/x/crypto v0.58.0
)

require (
	github.com/miekg/dns v1.1.43 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
