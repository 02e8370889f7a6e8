// Minimal service worker. Browsers only offer "Install app" when a service
// worker with a fetch handler is registered, so this exists purely to make
// code-server installable as a PWA. It caches nothing and never calls
// respondWith(), so every request goes to the network untouched.

self.addEventListener("install", () => {
  self.skipWaiting()
})

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim())
})

self.addEventListener("fetch", () => {
  // Intentionally empty: do not intercept requests.
})
