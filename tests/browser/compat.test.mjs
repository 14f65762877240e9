// node-sse-server's README page, unchanged but for the server address, against Broker in a
// real browser.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { startBroker, servePage, launchBrowser } from "./harness.mjs";

// The HTML example of node-sse-server's README, verbatim except `http://localhost:9090`.
const readmePage = (base) => `<!DOCTYPE html> <html> <body>
	<script type="text/javascript">
		const channelsToSubscribe = ["channel1", "channel2"];
		const source = new EventSource(\`${base}/subscribe/?channels=\${encodeURIComponent(channelsToSubscribe.join(","))}\`);

		function _getEventData(event) {
			const data = JSON.parse(event.data);
			const { channelName, type, payload } = data;
			return channelName ? {
				channelName,
				type,
				payload
			} : {
				type,
				payload
			};
		}
		// Fires once on a successful subscription.
		source.addEventListener("registered", (event) => {
			console.log(_getEventData(event));
		});
		// Fires once for every subscribed channel, giving the last
		// published value on that channel or "{}"
		source.addEventListener("lastEvent", (event) => {
			console.log(_getEventData(event));
		});
		// Fires on receiving an event of eventType "message"
		// for a channel.
		source.addEventListener("message", (event) => {
			document.body.innerHTML += event.data + "<br>";
		});
		// Fires on receiving an event of eventType "foo"
		source.addEventListener("foo", (event) => {
			document.body.innerHTML += event.data + "<br>";
		});
		// Fires on receiving an event of eventType "bar"
		source.addEventListener("bar", (event) => {
			document.body.innerHTML += event.data + "<br>";
		});
	</script>
</body> </html>`;

// The README's example batch.
const batch = {
  events: [
    { channelName: "channel1", type: "message", payload: '{ "location": "123.44,34.234234"}' },
    { channelName: "channel1", type: "foo", payload: '{ "message": "Hi fooo"}' },
    { channelName: "channel2", type: "message", payload: '{ "location": "123.44,872938.99"}' },
    { channelName: "channel2", type: "bar", payload: '{ "location": "123.44"}' },
  ],
};

let broker, browser;
before(async () => {
  broker = await startBroker(["--no-auth"]);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await broker?.stop();
});

test("node-sse-server's README page works unchanged against Broker", async () => {
  const page = await browser.newPage();
  const logged = [];
  const lastEventsSeen = new Promise((resolve) => {
    page.on("console", async (msg) => {
      const value = await msg.args()[0]?.jsonValue();
      logged.push(value);
      if (logged.filter((v) => v?.type === "lastEvent").length === 2) resolve();
    });
  });
  const site = await servePage(readmePage(broker.url));
  try {
    await page.goto(site.url);
    await lastEventsSeen;
    assert.equal(logged[0].type, "registered");
    assert.ok(JSON.parse(logged[0].payload).clientId, "registered carries a client id");
    assert.deepEqual(logged.slice(1, 3), [
      { channelName: "channel1", type: "lastEvent", payload: "{}" },
      { channelName: "channel2", type: "lastEvent", payload: "{}" },
    ]);

    const res = await fetch(`${broker.url}/publish`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(batch),
    });
    assert.equal(res.status, 200);

    await page.waitForFunction(() => document.body.querySelectorAll("br").length >= 4, null, {
      timeout: 10_000,
    });
    const lines = await page.evaluate(() =>
      document.body.innerText.split("\n").map((l) => l.trim()).filter(Boolean),
    );
    assert.deepEqual(
      lines.map((l) => JSON.parse(l)),
      batch.events,
      "the page shows message and foo of channel1, then message and bar of channel2",
    );
  } finally {
    site.close();
    await page.close();
  }
});
