// A Flow's timeline: segment coverage and gaps at any zoom, drawn from the analytics timeline
// (coverage of a few hundred equal parts of the view), down to single segments when the view
// holds few of them. Wheel zooms about the pointer, drag pans, shift-drag selects a range.

import { json } from "./api.js";
import { describe, durationText, formatTimerange, parseTimerange } from "./time.js";

const FEW_SEGMENTS = 300; // below this many in view, each segment is drawn

export class Timeline {
  constructor(canvas, flowId, { onSelect = () => {}, onView = () => {} } = {}) {
    this.canvas = canvas;
    this.flowId = flowId;
    this.onSelect = onSelect;
    this.onView = onView;
    this.view = null; // {start, end}: BigInt ns
    this.selection = null;
    this.data = null;
    this.pending = null;
    this.drag = null;
    canvas.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", (e) => this.up(e));
    canvas.tabIndex = 0; // keyboard: arrows pan, + and - zoom, Enter plays the middle of the view
    canvas.setAttribute("role", "slider");
    canvas.setAttribute("aria-label", "timeline: arrows pan, plus and minus zoom, Enter plays");
    canvas.addEventListener("keydown", (e) => this.key(e));
  }

  key(e) {
    if (!this.view) return;
    const { start, end } = this.view;
    const span = end - start;
    if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      const step = (span / 10n) * (e.key === "ArrowLeft" ? -1n : 1n);
      this.show(start + step, end + step);
    } else if (e.key === "+" || e.key === "=" || e.key === "-") {
      const middle = start + span / 2n;
      const half = e.key === "-" ? span : span / 4n;
      this.show(middle - half, middle + (half > 500000n ? half : 500000n));
    } else if (e.key === "Enter") {
      const middle = start + span / 2n;
      const half = span < 20n * 1000000000n ? span / 4n : 5n * 1000000000n;
      this.selection = { start: middle - half, end: middle + half };
      this.draw();
      this.onSelect(this.selection);
    } else {
      return;
    }
    e.preventDefault();
  }

  async show(start, end) {
    if (start === null || end === null || end <= start) return;
    this.view = { start, end };
    await this.load();
  }

  async load() {
    const { start, end } = this.view;
    const width = this.canvas.clientWidth || 800;
    const buckets = Math.max(1, Math.min(2000, Math.floor(width / 2)));
    const tr = encodeURIComponent(formatTimerange(start, end));
    const request = json(`/x-tamstore/analytics/flows/${this.flowId}/timeline?timerange=${tr}&buckets=${buckets}`);
    this.pending = request;
    const data = await request;
    if (this.pending !== request) return; // a newer view has been asked for
    data.items = null;
    if (data.segments > 0 && data.segments <= FEW_SEGMENTS) {
      const segments = await json(`/flows/${this.flowId}/segments?timerange=${tr}&accept_get_urls=&limit=${FEW_SEGMENTS}`);
      data.items = segments.map((s) => parseTimerange(s.timerange));
    }
    this.data = data;
    this.canvas.dataset.segments = String(data.segments);
    this.canvas.dataset.gaps = String((data.gaps || []).length);
    this.canvas.dataset.view = formatTimerange(start, end);
    this.draw();
    this.onView(this.view, data);
  }

  x(t) {
    const { start, end } = this.view;
    const width = this.canvas.width;
    return Number(((t - start) * BigInt(width)) / (end - start));
  }

  timeAt(px) {
    const { start, end } = this.view;
    const rect = this.canvas.getBoundingClientRect();
    const fraction = Math.max(0, Math.min(1, (px - rect.left) / rect.width));
    return start + ((end - start) * BigInt(Math.round(fraction * 1e6))) / 1000000n;
  }

  draw() {
    const c = this.canvas;
    c.width = c.clientWidth * (window.devicePixelRatio || 1);
    c.height = c.clientHeight * (window.devicePixelRatio || 1);
    const g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    const barTop = c.height * 0.15, barHeight = c.height * 0.5;
    g.fillStyle = "#f3d0d0"; // a gap, unless covered below
    g.fillRect(0, barTop, c.width, barHeight);
    const data = this.data;
    if (data && data.items) {
      for (const s of data.items) {
        const a = this.x(s.start), b = this.x(s.end);
        g.fillStyle = "#2f7d4f";
        g.fillRect(a, barTop, Math.max(1, b - a), barHeight);
        g.strokeStyle = "#fff";
        if (b - a > 4) g.strokeRect(a, barTop, b - a, barHeight);
      }
    } else if (data && data.coverage_buckets) {
      const n = data.coverage_buckets.length;
      data.coverage_buckets.forEach((covered, i) => {
        if (covered <= 0) return;
        g.fillStyle = `rgba(47, 125, 79, ${0.25 + 0.75 * covered})`;
        g.fillRect((i * c.width) / n, barTop, Math.ceil(c.width / n), barHeight);
      });
    }
    if (this.selection) {
      const a = this.x(this.selection.start), b = this.x(this.selection.end);
      g.fillStyle = "rgba(30, 90, 200, 0.25)";
      g.fillRect(a, 0, Math.max(2, b - a), c.height);
    }
    g.fillStyle = "#333";
    g.font = `${12 * (window.devicePixelRatio || 1)}px sans-serif`;
    const { start, end } = this.view;
    g.fillText(describe(start), 4, c.height - 6);
    const last = describe(end);
    g.fillText(last, c.width - g.measureText(last).width - 4, c.height - 6);
    const middle = `${durationText(end - start)} shown` + (data ? `, ${data.segments} segments, ${Math.round(data.coverage * 100)}% covered` : "");
    g.fillText(middle, (c.width - g.measureText(middle).width) / 2, c.height - 6);
  }

  wheel(e) {
    e.preventDefault();
    const at = this.timeAt(e.clientX);
    const { start, end } = this.view;
    const factor = e.deltaY < 0 ? 0.5 : 2;
    let span = BigInt(Math.round(Number(end - start) * factor));
    if (span < 1000000n) span = 1000000n; // 1 ms at most zoomed in
    const fraction = BigInt(Math.round(((e.clientX - this.canvas.getBoundingClientRect().left) / this.canvas.clientWidth) * 1e6));
    const newStart = at - (span * fraction) / 1000000n;
    this.show(newStart, newStart + span);
  }

  down(e) {
    this.canvas.setPointerCapture(e.pointerId);
    this.drag = { x: e.clientX, at: this.timeAt(e.clientX), view: { ...this.view }, select: e.shiftKey };
  }

  move(e) {
    if (!this.drag) return;
    if (this.drag.select) {
      const t = this.timeAt(e.clientX);
      const [a, b] = t < this.drag.at ? [t, this.drag.at] : [this.drag.at, t];
      this.selection = { start: a, end: b };
      this.draw();
      return;
    }
    const { start, end } = this.drag.view;
    const shift = ((end - start) * BigInt(Math.round(((this.drag.x - e.clientX) / this.canvas.clientWidth) * 1e6))) / 1000000n;
    this.view = { start: start + shift, end: end + shift };
    this.draw();
  }

  up(e) {
    const drag = this.drag;
    this.drag = null;
    if (!drag) return;
    if (drag.select && this.selection && this.selection.end > this.selection.start) {
      this.onSelect(this.selection);
    } else if (!drag.select && Math.abs(e.clientX - drag.x) < 3) {
      // a click: select the 10 s around it (or the view, if shorter)
      const t = this.timeAt(e.clientX);
      const span = this.view.end - this.view.start;
      const half = span < 20n * 1000000000n ? span / 4n : 5n * 1000000000n;
      this.selection = { start: t - half, end: t + half };
      this.draw();
      this.onSelect(this.selection);
    } else {
      this.load();
    }
  }
}
