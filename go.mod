module github.com/hitlessgo/hitless

go 1.26.0

require (
	github.com/cloudflare/tableflip v1.2.3
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.50.0
)

require (
	golang.org/x/net v0.62.0
	golang.org/x/text v0.43.0 // indirect
)
