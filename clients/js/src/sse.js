// A Server-Sent Events parser following the WHATWG HTML "Server-sent events" processing rules:
// lines end with CRLF, LF or CR; `data` lines accumulate; `event`, `id` and `retry` fields;
// comment lines start with a colon; a blank line dispatches.

/**
 * Incremental SSE parser. Feed it text as it arrives; it returns the events completed so far.
 */
export class SseParser {
  #buffer = "";
  #data = [];
  #event = "";
  #sawCR = false;
  #started = false;
  /** The last event ID buffer: it persists across events, as in the spec. */
  lastEventId = "";
  /** The last `retry:` value in milliseconds, or null. */
  retry = null;

  /**
   * Parses a chunk of text.
   * @param {string} text
   * @returns {{type: string, data: string, lastEventId: string}[]} dispatched events
   */
  push(text) {
    if (!this.#started && text.length > 0) {
      this.#started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    const events = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 10 && this.#sawCR) {
        // The LF of a CRLF whose CR ended the previous line.
        this.#sawCR = false;
        start = i + 1;
        continue;
      }
      this.#sawCR = false;
      if (c === 10 || c === 13) {
        this.#line(this.#buffer + text.slice(start, i), events);
        this.#buffer = "";
        this.#sawCR = c === 13;
        start = i + 1;
      }
    }
    this.#buffer += text.slice(start);
    return events;
  }

  #line(line, events) {
    if (line === "") {
      this.#dispatch(events);
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
    }
    switch (field) {
      case "data":
        this.#data.push(value);
        break;
      case "event":
        this.#event = value;
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
  }

  #dispatch(events) {
    if (this.#data.length === 0) {
      this.#event = "";
      return;
    }
    events.push({
      type: this.#event || "message",
      data: this.#data.join("\n"),
      lastEventId: this.lastEventId,
    });
    this.#data = [];
    this.#event = "";
  }
}
