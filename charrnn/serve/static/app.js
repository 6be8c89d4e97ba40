// The charrnn page: asks /v1/completions for a stream of server-sent events and shows the text as it
// arrives. Plain JavaScript, no libraries, nothing fetched from anywhere but this server.
"use strict";
const $ = (id) => document.getElementById(id);
let controller = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value || sessionStorage.getItem("charrnn-key");
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    return (body.error && body.error.message) || resp.statusText;
  } catch (e) {
    return resp.status + " " + resp.statusText;
  }
}

async function loadModels() {
  const resp = await fetch("/v1/models", { headers: headers() });
  if (resp.status === 401) {
    $("keyrow").hidden = false;
    $("status").textContent = "this server needs an API key";
    return;
  }
  if (!resp.ok) {
    $("status").textContent = "cannot list models: " + (await errorText(resp));
    return;
  }
  const list = (await resp.json()).data;
  const select = $("model");
  const chosen = select.value;
  select.textContent = "";
  for (const m of list) {
    const opt = document.createElement("option");
    opt.value = m.id;
    opt.textContent = m.id;
    opt.title = `${m.cell.toUpperCase()} ${m.num_layers}x${m.hidden_size}, step ${m.step ?? "-"}`;
    select.appendChild(opt);
  }
  if (chosen) select.value = chosen;
  $("status").textContent = list.length + " model" + (list.length === 1 ? "" : "s");
}

function request() {
  const num = (id) => Number($(id).value);
  const body = {
    model: $("model").value || undefined, prompt: $("prime").value, max_tokens: num("length"),
    temperature: num("temperature"), top_k: num("top_k"), top_p: num("top_p"), stream: true,
  };
  if ($("seed").value !== "") body.seed = num("seed");
  for (const k of ["max_tokens", "top_k", "seed"]) {
    if (k in body && !Number.isInteger(body[k])) throw new Error(k.replace("max_tokens", "length") + " must be a whole number");
  }
  return body;
}

async function generate(event) {
  event.preventDefault();
  showError("");
  let body;
  try { body = request(); } catch (e) { showError(e.message); return; }
  if ($("key").value) sessionStorage.setItem("charrnn-key", $("key").value);
  $("echo").textContent = body.prompt;
  $("text").textContent = "";
  $("info").textContent = "";
  controller = new AbortController();
  $("go").disabled = true;
  $("stop").disabled = false;
  let chars = 0, seed = null, reason = null;
  try {
    const resp = await fetch("/v1/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!resp.ok) {
      if (resp.status === 401) $("keyrow").hidden = false;
      showError(await errorText(resp));
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const msg = JSON.parse(data);
        if (msg.error) { showError(msg.error.message); continue; }
        seed = msg.seed;
        for (const c of msg.choices) {
          $("text").textContent += c.text;
          chars += c.text.length;
          if (c.finish_reason) reason = c.finish_reason;
        }
      }
    }
    $("info").textContent = `${chars} characters, seed ${seed}` + (reason === "stop" ? ", ended at a stop string" : "");
  } catch (e) {
    if (e.name === "AbortError") {
      $("info").textContent = `stopped after ${chars} characters` + (seed !== null ? `, seed ${seed}` : "");
    } else {
      showError("the request failed: " + e.message);
    }
  } finally {
    controller = null;
    $("go").disabled = false;
    $("stop").disabled = true;
  }
}

$("form").addEventListener("submit", generate);
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("key").addEventListener("change", () => { sessionStorage.setItem("charrnn-key", $("key").value); loadModels(); });
loadModels().catch((e) => { $("status").textContent = "cannot reach the server: " + e.message; });
