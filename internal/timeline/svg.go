package timeline

import (
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// The picture's layout, in SVG user units (pixels at 100 %). Two panels
// share one time axis: throughput on top, latency below.
const (
	svgW, svgH     = 1000, 640
	plotL, plotR   = 84, 970 // left and right edge of both panels
	topT, topB     = 96, 296 // throughput panel
	botT, botB     = 326, 566
	bandLabelY     = topT + 14
	nearWindow     = 500 * time.Millisecond // what the subtitle's ratio uses, as in the issue
	colorRate      = "#1f5fa8"
	colorFail      = "#d00000"
	colorP50       = "#7048b6"
	colorP99       = "#e76f00"
	colorSignal    = "#333333"
	colorReady     = "#2b8a3e"
	colorAxis      = "#555555"
	colorGrid      = "#e2e2e2"
	fontFamily     = "DejaVu Sans, Helvetica, Arial, sans-serif"
	minBandLabelPx = 48 // narrower bands go unlabelled rather than overprinted
)

// bandFill alternates between two light colours, one per serving
// generation in turn, light enough that the lines drawn over them keep
// their contrast.
var bandFill = [2]string{"#dde9f7", "#fbead0"}

// WriteSVG draws the run: throughput (requests/s per bucket, the last one
// over the part of a width the run covers: see Buckets) and p50/p99
// latency over time, failures in red, a vertical marker at each upgrade's
// Signalled (dashed) and Ready (solid), the background shaded by the
// serving generation, axes with units, a title and a legend. Plain SVG (no
// dependency), readable at a glance. width is the bucket width
// (DefaultWidth if <= 0).
//
// Latency is drawn on a log scale: near an upgrade the p99 can be ten or a
// hundred times the steady one, and on a linear scale that spike would
// flatten the steady p50 and p99 onto the axis; on a log scale equal
// ratios are equal heights, so the 1.2× the issue asks for looks the same
// wherever it happens.
//
// The subtitle counts requests, failures and upgrades and, when there are
// upgrades, gives NearSteady(500ms), the window the issue measures.
//
// The output depends only on r and width, so that a picture can be
// compared with a golden file.
func WriteSVG(w io.Writer, r *Run, width time.Duration) error {
	if width <= 0 {
		width = DefaultWidth
	}
	p := &plot{run: r, width: width, buckets: r.Buckets(width)}
	p.draw()
	_, err := io.WriteString(w, p.b.String())
	return err
}

type plot struct {
	run     *Run
	width   time.Duration
	buckets []Bucket
	t0      time.Time
	span    float64 // seconds shown on the time axis
	labels  []bandLabel
	b       strings.Builder
}

func (p *plot) printf(format string, args ...any) { fmt.Fprintf(&p.b, format, args...) }

// x maps a time to the horizontal coordinate shared by both panels.
func (p *plot) x(t time.Time) float64 {
	return plotL + (plotR-plotL)*t.Sub(p.t0).Seconds()/p.span
}

func (p *plot) draw() {
	p.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s" font-size="12">`+"\n",
		svgW, svgH, svgW, svgH, fontFamily)
	p.printf(`<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", svgW, svgH)
	p.title()
	if len(p.buckets) == 0 {
		p.text(float64(svgW)/2, float64(botT), "middle", 14, colorAxis, "no requests recorded")
		p.printf("</svg>\n")
		return
	}
	// The time axis ends where the last bucket does: at the end of the
	// run, not at a whole number of widths.
	p.t0 = p.buckets[0].Start
	p.span = p.buckets[len(p.buckets)-1].End.Sub(p.t0).Seconds()
	p.bands()
	p.timeAxis()
	p.throughput()
	p.latency()
	p.marks()
	p.bandLabels()
	p.frames()
	p.legend()
	p.printf("</svg>\n")
}

func (p *plot) title() {
	r := p.run
	kind, server := r.Kind, r.Server
	if kind == "" {
		kind = "traffic"
	}
	t := kind
	if server != "" {
		t += " against " + server
	}
	p.text(plotL, 26, "start", 18, "#000000", t)
	failed := 0
	for _, q := range r.Requests {
		if q.Failed {
			failed++
		}
	}
	sub := fmt.Sprintf("%d requests, %d failed, %d upgrades, %s buckets", len(r.Requests), failed, len(r.Marks), fmtDur(p.width))
	if len(r.Marks) > 0 {
		near, steady, ratio := r.NearSteady(nearWindow)
		sub += fmt.Sprintf("; p99 within ±%s of an upgrade %s, elsewhere %s (%.2f×)",
			fmtDur(nearWindow), fmtDur(near), fmtDur(steady), ratio)
	}
	p.text(plotL, 46, "start", 13, "#333333", sub)
}

// bands shades the background of both panels by the PID that served most
// of each bucket's responses. A bucket with no responses belongs to the
// band before it (or after it, at the start), so that a short gap does not
// split a generation in two.
func (p *plot) bands() {
	dom := make([]int, len(p.buckets))
	for i, b := range p.buckets {
		best, n := 0, 0
		for pid, c := range b.ByPID {
			if c > n || (c == n && pid < best) {
				best, n = pid, c
			}
		}
		dom[i] = best
	}
	for i := 1; i < len(dom); i++ {
		if dom[i] == 0 {
			dom[i] = dom[i-1]
		}
	}
	for i := len(dom) - 2; i >= 0; i-- {
		if dom[i] == 0 {
			dom[i] = dom[i+1]
		}
	}
	band := 0
	for i := 0; i < len(dom); {
		j := i
		for j < len(dom) && dom[j] == dom[i] {
			j++
		}
		x0 := p.x(p.buckets[i].Start)
		x1 := p.x(p.buckets[j-1].End)
		if dom[i] != 0 {
			fill := bandFill[band%2]
			for _, y := range [][2]int{{topT, topB}, {botT, botB}} {
				p.printf(`<rect x="%s" y="%d" width="%s" height="%d" fill="%s"/>`+"\n", f1(x0), y[0], f1(x1-x0), y[1]-y[0], fill)
			}
			if x1-x0 >= minBandLabelPx {
				p.labels = append(p.labels, bandLabel{(x0 + x1) / 2, "pid " + strconv.Itoa(dom[i])})
			}
			band++
		}
		i = j
	}
}

type bandLabel struct {
	x    float64
	text string
}

// bandLabels writes each generation's PID in its band, after the upgrade
// markers and with a halo of the background, so that a marker crossing
// the band's middle does not strike the number through.
func (p *plot) bandLabels() {
	for _, l := range p.labels {
		p.printf(`<text x="%s" y="%d" text-anchor="middle" font-size="11" fill="#333333" stroke="#ffffff" stroke-width="3" stroke-opacity="0.8" paint-order="stroke">`, f1(l.x), bandLabelY)
		_ = xml.EscapeText(&p.b, []byte(l.text))
		p.printf("</text>\n")
	}
}

// timeAxis draws vertical grid lines through both panels and the seconds
// under the lower one.
func (p *plot) timeAxis() {
	step := niceStep(p.span, 10)
	for s := 0.0; s <= p.span+step/1e6; s += step {
		x := plotL + (plotR-plotL)*s/p.span
		for _, y := range [][2]int{{topT, topB}, {botT, botB}} {
			p.printf(`<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s" stroke-width="1"/>`+"\n", f1(x), y[0], f1(x), y[1], colorGrid)
		}
		p.printf(`<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s"/>`+"\n", f1(x), botB, f1(x), botB+5, colorAxis)
		p.text(x, botB+19, "middle", 12, colorAxis, fmtNum(s))
	}
	p.text((plotL+plotR)/2, botB+40, "middle", 13, "#222222", "time since the first request (s)")
}

func (p *plot) throughput() {
	hi := 0.0
	for _, b := range p.buckets {
		hi = max(hi, b.Rate())
	}
	step := niceStep(max(hi, 1)*1.1, 6)
	top := math.Ceil(max(hi, 1)*1.1/step) * step
	y := func(v float64) float64 { return topB - (topB-topT)*v/top }
	for v := 0.0; v <= top+step/1e6; v += step {
		p.printf(`<line x1="%d" y1="%s" x2="%d" y2="%s" stroke="%s"/>`+"\n", plotL, f1(y(v)), plotR, f1(y(v)), colorGrid)
		p.text(plotL-6, y(v)+4, "end", 12, colorAxis, fmtNum(v))
	}
	p.vtext(24, (topT+topB)/2, "requests/s")
	var pts []string
	for _, b := range p.buckets {
		x0, x1 := p.x(b.Start), p.x(b.End)
		v := y(b.Rate())
		// Steps rather than a line through the centres: each bucket's
		// rate is a constant over its width, and a stall shows as a flat
		// floor rather than a spike.
		pts = append(pts, f1(x0)+","+f1(v), f1(x1)+","+f1(v))
	}
	p.printf(`<polyline points="%s" fill="none" stroke="%s" stroke-width="1.6"/>`+"\n", strings.Join(pts, " "), colorRate)
	labelEnd := math.Inf(-1) // where the last failure count written ends
	for _, b := range p.buckets {
		if b.Failed == 0 {
			continue
		}
		x0, x1 := p.x(b.Start), p.x(b.End)
		v := y(float64(b.Failed) * b.Rate() / float64(b.Requests))
		p.printf(`<rect x="%s" y="%s" width="%s" height="%s" fill="%s"/>`+"\n", f1(x0), f1(v), f1(max(x1-x0, 1)), f1(topB-v), colorFail)
		// A triangle under the axis, so that a single failure, far too
		// small a bar against a thousand requests a second, still shows.
		cx := (x0 + x1) / 2
		p.printf(`<path d="M%s %d l-5 9 h10 z" fill="%s"/>`+"\n", f1(cx), topB+1, colorFail)
		// The count beside it, unless it would run into the previous
		// one or off the panel; the triangle alone still says "failed".
		label := strconv.Itoa(b.Failed) + " failed"
		if w := 6.5 * float64(len(label)); cx+7 > labelEnd+8 && cx+7+w <= svgW {
			p.text(cx+7, topB+19, "start", 11, colorFail, label)
			labelEnd = cx + 7 + w
		}
	}
}

func (p *plot) latency() {
	lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
	for _, b := range p.buckets {
		if b.P50 > 0 {
			lo = min(lo, b.P50)
		}
		hi = max(hi, b.P99)
	}
	if hi == 0 {
		p.text((plotL+plotR)/2, (botT+botB)/2, "middle", 13, colorAxis, "no successful requests")
		p.vtext(24, (botT+botB)/2, "latency (log scale)")
		return
	}
	// Whole decades, so the scale's ticks are 1, 2 and 5 of a unit.
	dlo := math.Floor(math.Log10(float64(lo)))
	dhi := math.Ceil(math.Log10(float64(hi)))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	y := func(d time.Duration) float64 {
		return botB - (botB-botT)*(math.Log10(float64(d))-dlo)/(dhi-dlo)
	}
	for e := dlo; e <= dhi; e++ {
		for _, m := range []float64{1, 2, 5} {
			d := time.Duration(m * math.Pow(10, e))
			if m > 1 && e == dhi {
				break
			}
			stroke := colorGrid
			if m == 1 {
				stroke = "#c8c8c8"
			}
			p.printf(`<line x1="%d" y1="%s" x2="%d" y2="%s" stroke="%s"/>`+"\n", plotL, f1(y(d)), plotR, f1(y(d)), stroke)
			p.text(plotL-6, y(d)+4, "end", 12, colorAxis, fmtDur(d))
		}
	}
	p.vtext(24, (botT+botB)/2, "latency (log scale)")
	for _, s := range []struct {
		color string
		width string
		get   func(Bucket) time.Duration
	}{
		{colorP50, "1.6", func(b Bucket) time.Duration { return b.P50 }},
		{colorP99, "1.8", func(b Bucket) time.Duration { return b.P99 }},
	} {
		// A bucket with no successful request has no latency: the line
		// breaks there rather than diving to the axis.
		var pts []string
		flush := func() {
			if len(pts) > 0 {
				p.printf(`<polyline points="%s" fill="none" stroke="%s" stroke-width="%s" stroke-linejoin="round"/>`+"\n", strings.Join(pts, " "), s.color, s.width)
			}
			pts = pts[:0]
		}
		for _, b := range p.buckets {
			d := s.get(b)
			if d <= 0 {
				flush()
				continue
			}
			pts = append(pts, f1(p.x(b.Start.Add(b.End.Sub(b.Start)/2)))+","+f1(y(d)))
		}
		flush()
	}
}

// marks draws each upgrade: dashed at the signal, solid at Ready, over
// both panels.
func (p *plot) marks() {
	end := p.t0.Add(time.Duration(p.span * float64(time.Second)))
	line := func(t time.Time, color, dash string) {
		if t.IsZero() || t.Before(p.t0) || t.After(end) {
			return
		}
		x := f1(p.x(t))
		for _, y := range [][2]int{{topT, topB}, {botT, botB}} {
			p.printf(`<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s" stroke-width="1.4"%s/>`+"\n", x, y[0], x, y[1], color, dash)
		}
	}
	for _, m := range p.run.Marks {
		line(m.Signalled, colorSignal, ` stroke-dasharray="5 4"`)
		line(m.Ready, colorReady, "")
	}
}

func (p *plot) frames() {
	for _, y := range [][2]int{{topT, topB}, {botT, botB}} {
		p.printf(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="%s"/>`+"\n", plotL, y[0], plotR-plotL, y[1]-y[0], colorAxis)
	}
}

func (p *plot) legend() {
	x := float64(plotL)
	const y = 72
	item := func(swatch func(x float64) string, label string) {
		p.printf("%s\n", swatch(x))
		p.text(x+28, y+4, "start", 12, "#222222", label)
		x += 40 + 6.3*float64(len([]rune(label)))
	}
	line := func(color, extra string) func(float64) string {
		return func(x float64) string {
			return fmt.Sprintf(`<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s" stroke-width="2"%s/>`, f1(x), y, f1(x+22), y, color, extra)
		}
	}
	box := func(color string, w int) func(float64) string {
		return func(x float64) string {
			return fmt.Sprintf(`<rect x="%s" y="%d" width="%d" height="12" fill="%s" stroke="#bbbbbb" stroke-width="0.5"/>`, f1(x), y-6, w, color)
		}
	}
	item(line(colorRate, ""), "requests/s")
	item(func(x float64) string {
		return fmt.Sprintf(`<path d="M%s %d l-6 11 h12 z" fill="%s"/>`, f1(x+11), y-6, colorFail)
	}, "failed (red bar: failures/s)")
	item(line(colorP50, ""), "p50")
	item(line(colorP99, ""), "p99")
	item(line(colorSignal, ` stroke-dasharray="5 4"`), "SIGHUP")
	item(line(colorReady, ""), "new generation ready")
	item(box(bandFill[0], 22), "serving generation (pid)")
}

// text writes an escaped text element.
func (p *plot) text(x, y float64, anchor string, size int, color, s string) {
	p.printf(`<text x="%s" y="%s" text-anchor="%s" font-size="%d" fill="%s">`, f1(x), f1(y), anchor, size, color)
	_ = xml.EscapeText(&p.b, []byte(s)) // a strings.Builder does not fail
	p.printf("</text>\n")
}

// vtext writes a label turned to read upwards, centred on (x, y).
func (p *plot) vtext(x, y float64, s string) {
	p.printf(`<text transform="translate(%s %s) rotate(-90)" text-anchor="middle" font-size="13" fill="#222222">`, f1(x), f1(y))
	_ = xml.EscapeText(&p.b, []byte(s))
	p.printf("</text>\n")
}

// niceStep is a step of 1, 2 or 5 times a power of ten that cuts span into
// about n parts.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	e := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= raw {
			return m * e
		}
	}
	return 10 * e
}

// f1 formats a coordinate with one decimal: enough for a picture, and the
// same bytes on every platform, for the golden test.
func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// fmtNum formats a tick value without trailing zeros.
func fmtNum(v float64) string {
	s := strconv.FormatFloat(v, 'f', 3, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// fmtDur formats a latency for a label, to three significant figures at
// most: 250µs, 1.5ms, 12ms, 1.2s.
func fmtDur(d time.Duration) string {
	unit, div := "ns", 1.0
	switch {
	case d >= time.Second:
		unit, div = "s", 1e9
	case d >= time.Millisecond:
		unit, div = "ms", 1e6
	case d >= time.Microsecond:
		unit, div = "µs", 1e3
	}
	v := float64(d) / div
	prec := 0
	switch {
	case v < 10:
		prec = 2
	case v < 100:
		prec = 1
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s + unit
}
