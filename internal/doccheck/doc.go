// Package doccheck holds no code, only tests that fail when the prose of
// this repository stops telling the truth about its code. The README and
// the package docs are the product's promises; these tests make the
// checkable ones executable:
//
//   - Test, benchmark and fuzz names cited in Markdown files and in Go
//     comments name functions declared in some *_test.go file of either
//     module (TestCitedTestsExist).
//   - Every systemd unit snippet in the docs ([Service] in a Go comment's
//     code block or a Markdown code fence) is the shipped unit,
//     examples/systemd/hitless-http.service, in the lines that matter:
//     Type=notify, NotifyAccess=all, ExecReload= running hitless reload,
//     ExecStop= running hitless stop, TimeoutStopSec= (TestUnitSnippets).
//   - The library never exits the process, writes to stdout or stderr, logs
//     through a global logger, installs a signal handler outside
//     HandleSignals, or changes the environment, except where the
//     allowlist in never_test.go says so and why (TestNeverClaims).
//   - Both go.mod files name a minor Go release, the same one, and the
//     README states it (TestGoDirective).
//
// The tests read the source tree (found by walking up from the working
// directory to the go.mod of github.com/hitlessgo/hitless) with go/parser
// only: they need no build of the packages they read, so they also run
// while another package does not compile.
package doccheck
