// ferkit's page: upload a photo, or stream the webcam to the service at a steady rate, and draw
// every face's box, label and class probabilities. No external assets: everything comes from the service.
"use strict";

const COLORS = { angry: "#e62828", disgust: "#288c28", fear: "#a03ca0", sad: "#2878c8",
                 happy: "#f0c828", surprise: "#28a0e6", neutral: "#a0a0a0", uncertain: "#ffffff" };
const FRAME_INTERVAL_MS = 100;  // at most 10 frames a second; a frame is sent only when the last answer is in

const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d");
const video = document.getElementById("video");
const facesList = document.getElementById("faces");
const statusText = document.getElementById("status");
const fpsText = document.getElementById("fps");
const cameraButton = document.getElementById("camera");
let stream = null;
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
  context.drawImage(source, 0, 0, canvas.width, canvas.height);
  const scale = Math.max(1, canvas.width / 640);
  context.lineWidth = 3 * scale;
  context.font = `${16 * scale}px system-ui, sans-serif`;
  result.faces.forEach((face, i) => {
    const { x, y, w, h } = face.box;
    const color = COLORS[face.emotion] || "#2d5be3";
    const label = `#${face.track_id ?? i} ${describe(face)}`;
    context.strokeStyle = color;
    context.setLineDash(face.emotion === "uncertain" ? [8 * scale, 6 * scale] : []);
    context.strokeRect(x, y, w, h);
    context.setLineDash([]);
    const width = context.measureText(label).width + 8 * scale;
    const top = Math.max(0, y - 22 * scale);
    context.fillStyle = color;
    context.fillRect(x, top, width, 22 * scale);
    context.fillStyle = "#000";
    context.fillText(label, x + 4 * scale, top + 16 * scale);
  });
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
  video.hidden = true;
  cameraButton.textContent = "Start webcam";
  fpsText.textContent = "";
}

async function cameraLoop() {
  const frame = document.createElement("canvas");
  while (stream) {
    const started = performance.now();
    if (video.videoWidth) {
      frame.width = video.videoWidth;
      frame.height = video.videoHeight;
      frame.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.85));
      try {
        const result = await predict(blob, "webcam.jpg");
        if (!stream) break;
        draw(frame, result);
        const now = performance.now();
        answered = answered.filter((t) => now - t < 2000).concat(now);
        if (answered.length > 1) {
          fpsText.textContent = `${((answered.length - 1) * 1000 / (now - answered[0])).toFixed(1)} FPS`;
        }
      } catch (error) {
        statusText.textContent = `Error: ${error.message}`;
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
  video.srcObject = stream;
  await video.play();
  cameraButton.textContent = "Stop webcam";
  statusText.textContent = "Streaming…";
  answered = [];
  cameraLoop();
});
