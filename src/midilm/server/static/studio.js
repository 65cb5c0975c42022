// midilm studio: compose, continue, infill and extend multi-track pieces with a midilm server.
// Everything is drawn here from the server's JSON score (no library, no network but the
// server). Bars and tracks are numbered from 1 in the API and on screen, from 0 in this file.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const COLORS = ["#f2a93b", "#5cc8ff", "#9b8cff", "#5bd68a", "#ff7a90", "#ffd45c", "#4fd1c5", "#e58cff"];
  const DENSITIES = [["auto", "Density: auto"], ["low", "Density: low"], ["medium", "Density: medium"], ["high", "Density: high"]];
  const FALLBACK_INSTRUMENTS = [
    [0, "acoustic_grand_piano"], [24, "acoustic_guitar_nylon"], [33, "electric_bass_finger"],
    [40, "violin"], [48, "string_ensemble_1"], [56, "trumpet"], [65, "alto_sax"], [73, "flute"],
  ];
  const RULER = 26;       // px: the bar-number ruler
  const LANE = 96;        // px: the lowest a track's lane may be (lanes share the height)
  const MIN_BAR = 72;     // px: the narrowest bar before the roll scrolls

  const state = {
    model: null,
    instruments: [],      // [{program, name}] the model knows (name "drums" for the kit)
    score: null,          // the server's JSON score (ticks), or null
    plan: [               // track settings: the tracks to compose, or those of the score
      { instrument: "acoustic_grand_piano", density: "auto" },
      { instrument: "electric_bass_finger", density: "auto" },
    ],
    selection: null,      // {track, from, to} (bar indexes from 0)
    undo: [],
    redo: [],
    job: null,            // {id, abort} while a task runs
    draft: null,          // the score so far while a task runs
    audioUrl: null,
    playing: false,
  };
  window.midilmStudio = state; // for the curious (and the browser test)

  // ------------------------------------------------------------------ the server
  function authHeaders() {
    const token = sessionStorage.getItem("midilm-token");
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  class ApiError extends Error {}

  async function errorFrom(response) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.message) message = body.message;
      if (body && body.request_id && response.status >= 500) message += ` (request ${body.request_id})`;
    } catch (_) { /* not JSON: keep the status line */ }
    if (response.status === 401) {
      $("token-field").classList.remove("hidden");
      message = "This server needs a token: enter it at the top right and try again.";
    }
    if (response.status === 429) {
      const wait = response.headers.get("Retry-After");
      message = `The server is busy${wait ? `; try again in ${wait} s` : ""}.`;
    }
    return new ApiError(message);
  }

  async function api(path, { method = "GET", json, body, accept = "application/json", signal } = {}) {
    const headers = { Accept: accept, ...authHeaders() };
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, signal });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError("Cannot reach the midilm server. Is it still running?");
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  // A task answered as server-sent events: progress while it runs, then the result.
  async function streamTask(path, payload, label) {
    const abort = new AbortController();
    state.job = { id: null, abort };
    showProgress(label, 0, null);
    try {
      const response = await api(path, { method: "POST", json: payload, accept: "text/event-stream", signal: abort.signal });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const event = parseEvent(chunk);
          if (!event) continue;
          if (event.type === "job") state.job.id = event.data.job_id;
          else if (event.type === "progress") {
            showProgress(label, event.data.done, event.data.total);
            if (event.data.score) showDraft(event.data.score);
          }
          else if (event.type === "result") return event.data;
          else if (event.type === "error") throw new ApiError(event.data.message);
        }
      }
      throw new ApiError("The server closed the stream before the music was finished.");
    } finally {
      state.job = null;
      state.draft = null;
      hideProgress();
      drawRoll();
    }
  }

  // The music written so far, drawn while a task runs (not part of the history).
  function showDraft(score) {
    state.draft = score;
    drawRoll();
  }

  function parseEvent(chunk) {
    let type = "message";
    const data = [];
    for (const line of chunk.split("\n")) {
      if (line.startsWith("event:")) type = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trim());
    }
    if (!data.length) return null;
    return { type, data: JSON.parse(data.join("\n")) };
  }

  async function cancelJob() {
    const job = state.job;
    if (!job) return;
    if (job.id) {
      try { await api(`/jobs/${job.id}/cancel`, { method: "POST" }); } catch (_) { /* finished */ }
    }
    job.abort.abort();
  }

  // ------------------------------------------------------------------ messages
  function showError(err) {
    if (err && err.name === "AbortError") return;
    const text = err instanceof ApiError ? err.message : `Something went wrong: ${err && err.message ? err.message : err}`;
    $("error-text").textContent = text;
    $("error").classList.remove("hidden");
  }
  function clearError() { $("error").classList.add("hidden"); }

  function showProgress(label, done, total) {
    $("progress").classList.remove("hidden");
    const fraction = total ? Math.min(1, done / total) : 0;
    $("progress-fill").style.width = `${Math.round(fraction * 100)}%`;
    $("progress-text").textContent = total ? `${label}: bar ${done} of ${total}` : `${label}…`;
    document.body.dataset.busy = "1";
    updateButtons();
  }
  function hideProgress() {
    $("progress").classList.add("hidden");
    delete document.body.dataset.busy;
    updateButtons();
  }

  // ------------------------------------------------------------------ history
  function snapshot() {
    return JSON.stringify({ score: state.score, plan: state.plan });
  }
  function commit(change) {
    state.undo.push(snapshot());
    if (state.undo.length > 100) state.undo.shift();
    state.redo = [];
    change();
    afterChange();
  }
  function restore(from, to) {
    if (!from.length) return;
    to.push(snapshot());
    const { score, plan } = JSON.parse(from.pop());
    state.score = score;
    state.plan = plan;
    state.selection = null;
    afterChange();
  }
  function afterChange() {
    dropAudio();
    renderTracks();
    drawRoll();
    updateButtons();
  }

  // ------------------------------------------------------------------ instruments
  function instrumentOptions(select, value) {
    select.textContent = "";
    for (const { name } of state.instruments) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = prettyName(name);
      select.append(option);
    }
    if (value && !state.instruments.some((i) => i.name === value)) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = prettyName(value);
      select.append(option);
    }
    if (value) select.value = value;
  }
  function densityOptions(select, value) {
    select.textContent = "";
    for (const [key, label] of DENSITIES) {
      const option = document.createElement("option");
      option.value = key;
      option.textContent = label;
      select.append(option);
    }
    select.value = value || "auto";
  }
  function prettyName(name) {
    const text = String(name).replace(/_/g, " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }
  function nameOf(track) {
    if (track.is_drum) return "drums";
    const known = state.instruments.find((i) => i.program === track.program && i.name !== "drums");
    return known ? known.name : String(track.program);
  }
  function programOf(name) {
    if (name === "drums") return { program: 0, is_drum: true };
    const known = state.instruments.find((i) => i.name === name);
    return { program: known ? known.program : 0, is_drum: false };
  }
  // The plan follows the score: one entry per track, densities kept where they were.
  function syncPlan() {
    if (!state.score) return;
    state.plan = state.score.tracks.map((track, i) => ({
      instrument: nameOf(track),
      density: (state.plan[i] && state.plan[i].density) || "auto",
    }));
  }
  function densityValue(d) { return d === "auto" ? null : d; }

  // ------------------------------------------------------------------ the track panel
  function renderTracks() {
    const list = $("track-list");
    list.textContent = "";
    if (!state.plan.length) {
      const li = document.createElement("li");
      li.className = "track-empty";
      li.textContent = "No tracks yet: add one below.";
      list.append(li);
    }
    state.plan.forEach((entry, index) => {
      const li = document.createElement("li");
      if (state.selection && state.selection.track === index) li.classList.add("selected");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLORS[index % COLORS.length];
      const instrument = document.createElement("select");
      instrument.className = "instrument";
      instrument.setAttribute("aria-label", `Instrument of track ${index + 1}`);
      instrumentOptions(instrument, entry.instrument);
      instrument.addEventListener("change", () => commit(() => {
        entry.instrument = instrument.value;
        if (state.score && state.score.tracks[index]) {
          Object.assign(state.score.tracks[index], programOf(instrument.value));
          state.score.tracks[index].name = prettyName(instrument.value);
        }
      }));
      const density = document.createElement("select");
      density.className = "density";
      density.setAttribute("aria-label", `Density of track ${index + 1}`);
      densityOptions(density, entry.density);
      density.addEventListener("change", () => { entry.density = density.value; });
      const remove = document.createElement("button");
      remove.className = "link remove";
      remove.title = `Remove track ${index + 1}`;
      remove.setAttribute("aria-label", `Remove track ${index + 1}`);
      remove.textContent = "✕";
      remove.addEventListener("click", () => commit(() => {
        state.plan.splice(index, 1);
        if (state.score) {
          state.score.tracks.splice(index, 1);
          if (!state.score.tracks.length) state.score = null;
        }
        state.selection = null;
      }));
      const again = document.createElement("button");
      again.className = "link again";
      again.title = `Write track ${index + 1} anew against the others`;
      again.setAttribute("aria-label", `Regenerate track ${index + 1}`);
      again.textContent = "↻";
      again.disabled = !state.score || !!state.job;
      again.addEventListener("click", () => regenerateTrack(index));
      li.append(swatch, instrument, remove, density, again);
      list.append(li);
    });
  }

  // ------------------------------------------------------------------ the piano roll
  function shown() { return state.draft || state.score; }

  function bars() {
    const score = shown();
    if (!score) return [];
    if (score.bars && score.bars.length) return score.bars;
    const length = score.ticks_per_quarter * 4;
    let end = 0;
    for (const t of score.tracks) for (const n of t.notes) end = Math.max(end, n[0] + n[1]);
    return Array.from({ length: Math.max(1, Math.ceil(end / length)) }, (_, i) => ({ start: i * length, length, meter: "4/4" }));
  }

  function layout() {
    const grid = bars();
    const scroll = $("roll-scroll");
    const width = Math.max(scroll.clientWidth, grid.length * MIN_BAR);
    const tracks = shown() ? shown().tracks.length : 0;
    const room = scroll.clientHeight - 4 - RULER;
    const lane = tracks ? Math.max(LANE, Math.min(200, Math.floor(room / tracks))) : LANE;
    const height = Math.max(scroll.clientHeight - 4, RULER + tracks * lane);
    const total = grid.length ? grid[grid.length - 1].start + grid[grid.length - 1].length : 1;
    return { grid, width, height, total, tracks, lane, x: (tick) => (tick / total) * width };
  }

  function drawRoll() {
    const canvas = $("roll");
    const view = layout();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(view.width * ratio);
    canvas.height = Math.round(view.height * ratio);
    canvas.style.width = `${view.width}px`;
    canvas.style.height = `${view.height}px`;
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.fillStyle = "#1d2027";
    g.fillRect(0, 0, view.width, view.height);
    $("empty").classList.toggle("hidden", !!shown());
    let drawn = 0;
    if (shown()) {
      const score = shown();
      // lanes
      score.tracks.forEach((track, i) => {
        const top = RULER + i * view.lane;
        g.fillStyle = i % 2 ? "#20242c" : "#1b1e25";
        g.fillRect(0, top, view.width, view.lane);
      });
      // selection
      const sel = state.selection;
      if (sel && sel.track < view.tracks) {
        const a = view.grid[sel.from], b = view.grid[sel.to];
        if (a && b) {
          const x0 = view.x(a.start), x1 = view.x(b.start + b.length);
          const top = RULER + sel.track * view.lane;
          g.fillStyle = "rgba(242, 169, 59, 0.16)";
          g.fillRect(x0, top, x1 - x0, view.lane);
          g.strokeStyle = "#f2a93b";
          g.lineWidth = 2;
          g.strokeRect(x0 + 1, top + 1, x1 - x0 - 2, view.lane - 2);
        }
      }
      // beats and bars
      view.grid.forEach((bar, index) => {
        const [num, den] = bar.meter.split("/").map(Number);
        const beat = (score.ticks_per_quarter * 4) / (den || 4);
        g.strokeStyle = "#2a2f3a";
        g.lineWidth = 1;
        for (let t = bar.start + beat; t < bar.start + bar.length - 1; t += beat) {
          const x = Math.round(view.x(t)) + 0.5;
          g.beginPath(); g.moveTo(x, RULER); g.lineTo(x, view.height); g.stroke();
        }
        const x = Math.round(view.x(bar.start)) + 0.5;
        g.strokeStyle = "#3d4452";
        g.beginPath(); g.moveTo(x, 0); g.lineTo(x, view.height); g.stroke();
        g.fillStyle = "#9aa1b2";
        g.font = "12px system-ui, sans-serif";
        g.fillText(String(index + 1), x + 5, 17);
        if (index === 0 || bar.meter !== view.grid[index - 1].meter) {
          g.fillStyle = "#6c7385";
          g.fillText(`${num}/${den}`, x + 24, 17);
        }
      });
      g.strokeStyle = "#3d4452";
      g.beginPath(); g.moveTo(0, RULER + 0.5); g.lineTo(view.width, RULER + 0.5); g.stroke();
      // notes
      score.tracks.forEach((track, i) => {
        const top = RULER + i * view.lane + 6;
        const height = view.lane - 12;
        let low = 127, high = 0;
        for (const n of track.notes) { low = Math.min(low, n[2]); high = Math.max(high, n[2]); }
        if (low > high) { low = 60; high = 72; }
        low -= 1; high += 1;
        const row = Math.min(8, height / (high - low + 1));
        const span = row * (high - low + 1);
        const offset = top + (height - span) / 2;
        g.fillStyle = COLORS[i % COLORS.length];
        for (const [time, duration, pitch, velocity] of track.notes) {
          const x = view.x(time);
          const w = Math.max(2, view.x(time + duration) - x - 1);
          const y = offset + (high - pitch) * row;
          g.globalAlpha = 0.55 + 0.45 * (velocity / 127);
          g.fillRect(x, y, w, Math.max(1.5, row - 1));
          drawn += 1;
        }
        g.globalAlpha = 1;
        g.fillStyle = "rgba(21, 23, 28, 0.75)";
        const label = `${i + 1}  ${prettyName(nameOf(track))}`;
        g.font = "12px system-ui, sans-serif";
        g.fillRect(4, RULER + i * view.lane + 4, g.measureText(label).width + 12, 18);
        g.fillStyle = "#e6e8ee";
        g.fillText(label, 10, RULER + i * view.lane + 17);
      });
      // play head
      if (state.playing) {
        const tick = playTick();
        if (tick !== null) {
          const x = Math.round(view.x(tick)) + 0.5;
          g.strokeStyle = "#ffffff";
          g.lineWidth = 1.5;
          g.beginPath(); g.moveTo(x, 0); g.lineTo(x, view.height); g.stroke();
        }
      }
    }
    canvas.dataset.notes = String(drawn);
    canvas.dataset.bars = String(view.grid.length);
    canvas.dataset.tracks = String(view.tracks);
  }

  function hit(event) {
    const canvas = $("roll");
    const rect = canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const y = event.clientY - rect.top;
    const view = layout();
    const track = Math.floor((y - RULER) / view.lane);
    const tick = (x / view.width) * view.total;
    const bar = view.grid.findIndex((b) => tick >= b.start && tick < b.start + b.length);
    return { track: y < RULER ? -1 : track, bar, view };
  }

  let dragging = null;
  function onDown(event) {
    if (!state.score || event.button !== 0) return;
    const { track, bar, view } = hit(event);
    if (track < 0 || track >= view.tracks || bar < 0) {
      state.selection = null;
    } else {
      dragging = { track, anchor: bar };
      state.selection = { track, from: bar, to: bar };
    }
    selectionChanged();
  }
  function onMove(event) {
    if (!dragging) return;
    const { bar } = hit(event);
    if (bar < 0) return;
    state.selection = { track: dragging.track, from: Math.min(dragging.anchor, bar), to: Math.max(dragging.anchor, bar) };
    selectionChanged();
  }
  function onUp() { dragging = null; }

  function selectionChanged() {
    const sel = state.selection;
    const text = $("selection-text");
    if (sel) {
      const which = sel.from === sel.to ? `bar ${sel.from + 1}` : `bars ${sel.from + 1}–${sel.to + 1}`;
      text.textContent = `Track ${sel.track + 1} (${prettyName(state.plan[sel.track] ? state.plan[sel.track].instrument : "")}), ${which}.`;
    } else {
      text.textContent = "Drag across bars of a track on the roll to select them.";
    }
    renderTracks();
    drawRoll();
    updateButtons();
  }

  // ------------------------------------------------------------------ tasks
  function sampling() {
    const out = { temperature: Number($("temperature").value) };
    const seed = $("seed").value.trim();
    if (seed !== "") out.seed = Number(seed);
    if (state.model) out.model = state.model;
    return out;
  }

  async function run(task) {
    if (state.job) return;
    clearError();
    try {
      await task();
    } catch (err) {
      showError(err);
    }
  }

  function accept(answer) {
    commit(() => {
      state.score = answer.scores[0];
      syncPlan();
      if (state.selection && (!state.score.bars || state.selection.to >= state.score.bars.length)) state.selection = null;
    });
  }

  const generate = () => run(async () => {
    if (!state.plan.length) throw new ApiError("Add at least one track to compose for.");
    const payload = {
      ...sampling(),
      bars: Number($("bars").value),
      instruments: state.plan.map((t) => t.instrument),
      density: state.plan.map((t) => densityValue(t.density)),
    };
    if ($("meter").value) payload.meter = $("meter").value;
    if ($("tempo").value) payload.tempo = Number($("tempo").value);
    accept(await streamTask("/generate", payload, "Composing"));
  });

  const continueScore = () => run(async () => {
    if (!state.score) throw new ApiError("There is nothing to continue yet: generate or open a piece first.");
    const payload = {
      ...sampling(),
      score: state.score,
      bars: Number($("continue-bars").value),
      density: state.plan.map((t) => densityValue(t.density)),
    };
    accept(await streamTask("/continue", payload, "Continuing"));
  });

  const addTrack = () => run(async () => {
    const instrument = $("new-instrument").value;
    const density = $("new-density").value;
    if (!state.score) {
      commit(() => state.plan.push({ instrument, density }));
      return;
    }
    const payload = { ...sampling(), score: state.score, instrument };
    if (density !== "auto") payload.density = density;
    const answer = await streamTask("/add-track", payload, "Adding a track");
    const densities = state.plan.map((t) => t.density).concat([density]);
    accept(answer);
    state.plan.forEach((t, i) => { t.density = densities[i] || "auto"; });
    renderTracks();
  });

  const regenerate = () => run(async () => {
    const sel = state.selection;
    if (!state.score || !sel) throw new ApiError("Select bars of a track on the roll first.");
    const barsToWrite = [];
    for (let b = sel.from; b <= sel.to; b++) barsToWrite.push(b + 1);
    const payload = { ...sampling(), score: state.score, track: sel.track + 1, bars: barsToWrite };
    accept(await streamTask("/infill", payload, "Rewriting the selection"));
  });

  const regenerateTrack = (index) => run(async () => {
    if (!state.score) throw new ApiError("Generate or open a piece first.");
    const payload = { ...sampling(), score: state.score, track: index + 1 };
    const density = densityValue((state.plan[index] || {}).density || "auto");
    if (density) payload.density = density;
    accept(await streamTask("/regenerate-track", payload, `Rewriting track ${index + 1}`));
  });

  async function openFile(file) {
    clearError();
    try {
      const limit = state.maxUpload || 5 * 1024 * 1024;
      if (file.size > limit) throw new ApiError(`${file.name} is larger than the ${(limit / 1048576).toFixed(0)} MiB the server accepts.`);
      const form = new FormData();
      form.append("file", file, file.name);
      const response = await api("/convert", { method: "POST", body: form });
      const score = await response.json();
      commit(() => {
        state.score = score;
        state.selection = null;
        syncPlan();
      });
    } catch (err) {
      showError(err);
    }
  }

  async function download() {
    clearError();
    try {
      if (!state.score) throw new ApiError("There is nothing to download yet.");
      const response = await api("/convert", { method: "POST", json: { score: state.score }, accept: "audio/midi" });
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = "midilm.mid";
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      showError(err);
    }
  }

  // ------------------------------------------------------------------ playback
  function dropAudio() {
    stop();
    if (state.audioUrl) URL.revokeObjectURL(state.audioUrl);
    state.audioUrl = null;
  }

  async function play() {
    clearError();
    try {
      if (!state.score) throw new ApiError("There is nothing to play yet.");
      if (!state.audioUrl) {
        $("play").disabled = true;
        $("play").textContent = "Rendering…";
        try {
          const response = await api("/render?format=wav", { method: "POST", json: { score: state.score }, accept: "audio/wav" });
          state.audioUrl = URL.createObjectURL(await response.blob());
        } finally {
          $("play").textContent = "▶ Play";
        }
      }
      const audio = $("audio");
      audio.src = state.audioUrl;
      await audio.play();
      state.playing = true;
      updateButtons();
      requestAnimationFrame(tickPlayHead);
    } catch (err) {
      showError(err);
      updateButtons();
    }
  }

  function stop() {
    const audio = $("audio");
    if (!audio.paused) audio.pause();
    audio.currentTime = 0;
    state.playing = false;
    updateButtons();
  }

  function playTick() {
    const score = state.score;
    if (!score) return null;
    const seconds = $("audio").currentTime;
    const tempos = score.tempos && score.tempos.length ? score.tempos : [{ time: 0, qpm: 120 }];
    let tick = 0, elapsed = 0, qpm = tempos[0].qpm;
    for (let i = 1; i < tempos.length; i++) {
      const span = ((tempos[i].time - tick) / score.ticks_per_quarter) * (60 / qpm);
      if (elapsed + span > seconds) break;
      elapsed += span;
      tick = tempos[i].time;
      qpm = tempos[i].qpm;
    }
    return tick + (seconds - elapsed) * (qpm / 60) * score.ticks_per_quarter;
  }

  function tickPlayHead() {
    if (!state.playing) { drawRoll(); return; }
    drawRoll();
    requestAnimationFrame(tickPlayHead);
  }

  // ------------------------------------------------------------------ wiring
  function updateButtons() {
    const busy = !!state.job;
    const has = !!state.score;
    $("generate").disabled = busy;
    $("continue").disabled = busy || !has;
    $("add-track").disabled = busy;
    $("regenerate").disabled = busy || !has || !state.selection;
    $("clear-selection").disabled = !state.selection;
    $("play").disabled = busy || !has || state.playing;
    $("stop").disabled = !state.playing;
    $("download").disabled = !has;
    $("undo").disabled = busy || !state.undo.length;
    $("redo").disabled = busy || !state.redo.length;
    for (const button of document.querySelectorAll("#track-list .again")) button.disabled = busy || !has;
  }

  async function loadModels() {
    try {
      const response = await api("/models");
      const models = await response.json();
      const select = $("model");
      select.textContent = "";
      for (const m of models) {
        const option = document.createElement("option");
        option.value = m.id;
        option.textContent = `${m.id} (${m.kind})`;
        select.append(option);
      }
      const chosen = models.find((m) => m.default) || models[0];
      if (chosen) { select.value = chosen.id; await chooseModel(chosen.id); }
      $("server-status").textContent = "connected";
      $("server-status").className = "status ok";
    } catch (err) {
      $("server-status").textContent = "offline";
      $("server-status").className = "status bad";
      state.instruments = FALLBACK_INSTRUMENTS.map(([program, name]) => ({ program, name }));
      refreshInstrumentControls();
      showError(err);
    }
  }

  async function chooseModel(id) {
    state.model = id;
    const info = await (await api(`/models/${encodeURIComponent(id)}`)).json();
    const instruments = Array.isArray(info.instruments) && info.instruments.length
      ? info.instruments.map((i) => ({ program: i.program, name: i.name }))
      : FALLBACK_INSTRUMENTS.map(([program, name]) => ({ program, name }));
    state.instruments = instruments;
    const meter = $("meter");
    meter.textContent = "";
    for (const m of (info.meters && info.meters.length ? info.meters : ["4/4"])) {
      const option = document.createElement("option");
      option.value = m;
      option.textContent = m;
      meter.append(option);
    }
    const maxBars = Math.min(info.max_bars || 64, (info.limits || {}).max_bars || 64);
    $("bars").max = maxBars;
    $("continue-bars").max = maxBars;
    state.maxUpload = (info.limits || {}).max_upload_bytes || 5 * 1024 * 1024;
    $("regenerate").title = info.infill === false ? "This model was not trained to infill bars" : "Write the selected bars anew";
    refreshInstrumentControls();
  }

  function refreshInstrumentControls() {
    instrumentOptions($("new-instrument"), state.instruments.some((i) => i.name === "drums") ? "drums" : (state.instruments[0] || {}).name);
    densityOptions($("new-density"), "auto");
    renderTracks();
  }

  function keyboard(event) {
    if (event.target.matches("input, select, textarea")) return;
    const mod = event.ctrlKey || event.metaKey;
    if (mod && event.key.toLowerCase() === "z") {
      event.preventDefault();
      if (event.shiftKey) restore(state.redo, state.undo); else restore(state.undo, state.redo);
    } else if (mod && event.key.toLowerCase() === "y") {
      event.preventDefault();
      restore(state.redo, state.undo);
    } else if (event.key === " ") {
      event.preventDefault();
      if (state.playing) stop(); else play();
    } else if (event.key === "Escape") {
      state.selection = null;
      selectionChanged();
    }
  }

  function init() {
    $("generate").addEventListener("click", generate);
    $("continue").addEventListener("click", continueScore);
    $("add-track").addEventListener("click", addTrack);
    $("regenerate").addEventListener("click", regenerate);
    $("clear-selection").addEventListener("click", () => { state.selection = null; selectionChanged(); });
    $("download").addEventListener("click", download);
    $("play").addEventListener("click", play);
    $("stop").addEventListener("click", stop);
    $("undo").addEventListener("click", () => restore(state.undo, state.redo));
    $("redo").addEventListener("click", () => restore(state.redo, state.undo));
    $("cancel").addEventListener("click", cancelJob);
    $("error-close").addEventListener("click", clearError);
    $("new").addEventListener("click", () => commit(() => { state.score = null; state.selection = null; }));
    $("open").addEventListener("click", () => $("file").click());
    $("file").addEventListener("change", () => {
      const file = $("file").files[0];
      if (file) openFile(file);
      $("file").value = "";
    });
    $("model").addEventListener("change", () => chooseModel($("model").value).catch(showError));
    $("token").addEventListener("change", () => {
      sessionStorage.setItem("midilm-token", $("token").value.trim());
      loadModels();
    });
    $("temperature").addEventListener("input", () => {
      $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
    });
    $("audio").addEventListener("ended", () => { state.playing = false; updateButtons(); drawRoll(); });

    const canvas = $("roll");
    canvas.addEventListener("mousedown", onDown);
    window.addEventListener("mousemove", onMove);
    window.addEventListener("mouseup", onUp);

    const zone = $("drop-zone");
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("dragging");
      const file = e.dataTransfer.files[0];
      if (file) openFile(file);
    });
    document.addEventListener("keydown", keyboard);
    window.addEventListener("resize", drawRoll);

    densityOptions($("new-density"), "auto");
    renderTracks();
    drawRoll();
    updateButtons();
    loadModels();
  }

  init();
})();
