// ferkit's page: upload a photo, or stream the webcam to the service over one WebSocket (/v1/live: the
// service tracks the faces and smooths their probabilities, as `ferkit webcam` does), and draw every
// face's box, label and class probabilities. No external assets: everything comes from the service.
"use strict";

const COLORS = { angry: "#e62828", disgust: "#288c28", fear: "#a03ca0", sad: "#2878c8",
                 happy: "#f0c828", surprise: "#28a0e6", neutral: "#a0a0a0", uncertain: "#ffffff" };
const FRAME_INTERVAL_MS = 100;  // at most 10 frames a second; a frame is sent only when the last answer is in
const LABEL_PX = 16;  // label text height on screen, in CSS pixels, whatever the image's size

const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d");
const video = document.getElementById("video");
const facesList = document.getElementById("faces");
const statusText = document.getElementById("status");
const fpsText = document.getElementById("fps");
const cameraButton = document.getElementById("camera");
const idle = document.getElementById("idle");
let stream = null;
let live = null;  // the WebSocket of the running live session
let answered = [];  // times of the last answers, for the frame rate

async function predict(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  const response = await fetch("/v1/predict", { method: "POST", body: form });
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return body;
}

function draw(source, result) {
  canvas.width = result.width;
  canvas.height = result.height;
  idle.hidden = true;
  canvas.hidden = false;
  context.drawImage(source, 0, 0, canvas.width, canvas.height);
  // image pixels per CSS pixel: labels keep their on-screen size on a phone and on a 4K photo alike
  const scale = canvas.width / Math.max(1, canvas.clientWidth);
  context.lineWidth = 3 * scale;
  context.font = `${LABEL_PX * scale}px system-ui, sans-serif`;
  const labels = [];
  result.faces.forEach((face, i) => {
    const { x, y, w, h } = face.box;
    const color = COLORS[face.emotion] || "#2d5be3";
    const label = `#${face.track_id ?? i} ${describe(face)}`;
    context.strokeStyle = color;
    context.setLineDash(face.emotion === "uncertain" ? [8 * scale, 6 * scale] : []);
    context.strokeRect(x, y, w, h);
    context.setLineDash([]);
    // the label above the box, else below it, else inside its top: the first spot inside the image
    // that no earlier label covers (shifted left or up where it would run off the image)
    const width = Math.min(canvas.width, context.measureText(label).width + 8 * scale);
    const height = (LABEL_PX + 6) * scale;
    const left = Math.min(Math.max(0, x), canvas.width - width);
    const spots = [y - height, y + h, y].filter((t) => t >= 0 && t + height <= canvas.height);
    const free = spots.find((t) => !labels.some((l) => left < l.left + l.width && l.left < left + width &&
                                                        t < l.top + l.height && l.top < t + height));
    const top = free ?? spots[0] ?? Math.max(0, Math.min(y, canvas.height - height));
    context.fillStyle = color;
    context.fillRect(left, top, width, height);
    context.fillStyle = "#000";
    context.fillText(label, left + 4 * scale, top + (LABEL_PX + 1) * scale, width - 8 * scale);
    labels.push({ left, top, width, height });
  });
  canvas.dataset.labels = JSON.stringify(labels);  // where the labels went, in image pixels
  listFaces(result.faces);
}

// "happy 91%", or for a face below the service's --min-confidence "uncertain (happy 41%)"
function describe(face) {
  const percent = `${(100 * face.confidence).toFixed(0)}%`;
  if (face.emotion !== "uncertain") return `${face.emotion} ${percent}`;
  const best = Object.entries(face.probabilities).reduce((a, b) => (b[1] > a[1] ? b : a))[0];
  return `uncertain (${best} ${percent})`;
}

function listFaces(faces) {
  facesList.replaceChildren(...faces.map((face, i) => {
    const item = document.createElement("li");
    item.className = "face";
    const label = document.createElement("div");
    label.className = "face-label";
    label.textContent = `Face #${face.track_id ?? i}: ${describe(face)}`;
    item.append(label);
    for (const [name, p] of Object.entries(face.probabilities)) {
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.innerHTML = `<span></span><span class="bar-track"><span class="bar-fill"></span></span><span class="bar-value"></span>`;
      bar.children[0].textContent = name;
      bar.querySelector(".bar-fill").style.width = `${(100 * p).toFixed(1)}%`;
      bar.querySelector(".bar-fill").style.background = COLORS[name] || "#2d5be3";
      bar.children[2].textContent = `${(100 * p).toFixed(0)}%`;
      item.append(bar);
    }
    return item;
  }));
  statusText.textContent = faces.length ? `${faces.length} face${faces.length > 1 ? "s" : ""} found.` : "No face found.";
}

document.getElementById("file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  stopCamera();
  statusText.textContent = "Analysing…";
  try {
    const image = await createImageBitmap(file);
    draw(image, await predict(file, file.name));
  } catch (error) {
    statusText.textContent = `Error: ${error.message}`;
  }
});

function stopCamera() {
  if (!stream) return;
  stream.getTracks().forEach((track) => track.stop());
  stream = null;
  if (live) live.close();
  live = null;
  video.hidden = true;
  cameraButton.textContent = "Start webcam";
  fpsText.textContent = "";
}

// One live session: a frame goes out once the answer to the last one is in.
function openLive() {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/live`);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => resolve(socket);
    socket.onerror = () => reject(new Error("the live session could not be opened"));
  });
}

function answerOf(socket) {
  return new Promise((resolve, reject) => {
    socket.onmessage = (event) => resolve(JSON.parse(event.data));
    socket.onclose = (event) => reject(new Error(event.reason || "the live session closed"));
  });
}

async function cameraLoop(socket) {
  const frame = document.createElement("canvas");
  while (stream && live === socket) {
    const started = performance.now();
    if (video.videoWidth) {
      frame.width = video.videoWidth;
      frame.height = video.videoHeight;
      frame.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.85));
      try {
        const bytes = await blob.arrayBuffer();
        // Listen, send and await in one turn: a close while the answer has no awaiter yet would be an
        // unhandled rejection (the camera stopped during arrayBuffer(), seen as a page error in CI).
        const answer = answerOf(socket);
        socket.send(bytes);
        const result = await answer;
        if (!stream || live !== socket) break;
        if (result.error) throw new Error(result.error);
        draw(frame, result);
        const now = performance.now();
        answered = answered.filter((t) => now - t < 2000).concat(now);
        if (answered.length > 1) {
          fpsText.textContent = `${((answered.length - 1) * 1000 / (now - answered[0])).toFixed(1)} FPS`;
        }
      } catch (error) {
        if (live !== socket) break;  // stopped meanwhile: its closing is no error
        statusText.textContent = `Error: ${error.message}`;
        if (socket.readyState !== WebSocket.OPEN) return stopCamera();
      }
    }
    const wait = FRAME_INTERVAL_MS - (performance.now() - started);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, wait)));
  }
}

cameraButton.addEventListener("click", async () => {
  if (stream) return stopCamera();
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    statusText.textContent = `Camera unavailable: ${error.message}`;
    return;
  }
  try {
    live = await openLive();
  } catch (error) {
    statusText.textContent = `Error: ${error.message}`;
    return stopCamera();
  }
  video.srcObject = stream;
  await video.play();
  cameraButton.textContent = "Stop webcam";
  statusText.textContent = "Streaming…";
  answered = [];
  cameraLoop(live);
});
