// Generates the typed client in src/generated from the checked-in spec (`npm run generate`).
// `EQ_TS_CLIENT_OUT` writes it elsewhere instead: the Rust test `ts_client` regenerates into
// a temporary directory and checks that the committed copy is not stale.
import { defineConfig } from '@hey-api/openapi-ts';

export default defineConfig({
  input: '../openapi.json',
  output: {
    path: process.env.EQ_TS_CLIENT_OUT || 'src/generated',
    clean: true,
  },
  parser: {
    patch: {
      operations: {
        // poem-openapi describes an event stream as `{type: array, format: event-stream,
        // items: LiveEvent}`; hey-api types the stream's items with the schema itself, so
        // every event would be typed `LiveEvent[]`. Each event's `data` is one LiveEvent.
        'GET /v1/live': (operation) => {
          const stream = operation.responses?.['200']?.content?.['text/event-stream'];
          if (stream?.schema?.format === 'event-stream' && stream.schema.items) {
            stream.schema = stream.schema.items;
          }
        },
      },
    },
  },
  plugins: ['@hey-api/client-fetch', '@hey-api/typescript', '@hey-api/sdk'],
});
