//go:build !unix

package upgrade

const noFollow = 0
