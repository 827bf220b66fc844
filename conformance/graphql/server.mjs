// A real GraphQL upstream for conformance/tests/graphql.rs: the reference implementation
// (graphql-js) served by graphql-http's handler on node's http module.
//
//   node server.mjs <users|orders|all|rest> [port]
//
// `rest` is a plain JSON service for REST-backed fields: GET /products/:id answers
// {"product": {...}} (404 for an unknown id) with the x-auth header it got as `seenAuth`,
// GET /reviews?product=:id a list, GET /calls how many requests it served before.
// `users` answers Query.user/users and Mutation.setName, `orders` Query.order/orders and
// Mutation.createOrder, `all` the whole test schema (the reference answer). It prints
// "listening <port>" once the port accepts (port 0, the default, lets the kernel pick).
// Mutations sleep 50 ms between their two timestamps, so a test can tell serial execution
// from parallel. `order(id: "boom")` fails with a stack trace in its error's extensions.
// The GraphQL services gzip their answers for a request that accepts gzip, as a service
// behind compression middleware does.
import http from 'node:http';
import zlib from 'node:zlib';
import { GraphQLError, buildSchema } from 'graphql';
import { createHandler } from 'graphql-http/lib/use/http';

const [service, port] = process.argv.slice(2);

const users = new Map([
  ['1', { id: '1', name: 'Ada', email: 'ada@example.com', friendIds: ['2'] }],
  ['2', { id: '2', name: 'Grace', email: null, friendIds: ['1'] }],
]);
const orders = [
  { id: 'o1', item: 'loom', userId: '1' },
  { id: 'o2', item: 'punch cards', userId: '2' },
];

const sdl = {
  users: `
    type Query { user(id: ID!): User  users: [User!]!  slowUser(id: ID!, ms: Int!): User }
    type Mutation { setName(id: ID!, name: String!): Stamp! }
    type User { id: ID!  name: String!  email: String  friends(first: Int): [User!]! }
    type Stamp { value: String!  started: Float!  finished: Float! }`,
  orders: `
    type Query { order(id: ID!): Order  orders(userId: ID): [Order!]!  slowOrder(id: ID!, ms: Int!): Order }
    type Mutation { createOrder(item: String!): Stamp! }
    type Order { id: ID!  item: String!  userId: ID! }
    type Stamp { value: String!  started: Float!  finished: Float! }`,
};
sdl.all = `
  type Query {
    user(id: ID!): User  users: [User!]!  slowUser(id: ID!, ms: Int!): User
    order(id: ID!): Order  orders(userId: ID): [Order!]!  slowOrder(id: ID!, ms: Int!): Order
  }
  type Mutation { setName(id: ID!, name: String!): Stamp!  createOrder(item: String!): Stamp! }
  type User { id: ID!  name: String!  email: String  friends(first: Int): [User!]! }
  type Order { id: ID!  item: String!  userId: ID! }
  type Stamp { value: String!  started: Float!  finished: Float! }`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const user = (u) => u && { ...u, friends: ({ first }) => u.friendIds.slice(0, first ?? undefined).map((id) => user(users.get(id))) };
const stamp = async (value) => {
  const started = performance.timeOrigin + performance.now();
  await sleep(50);
  return { value, started, finished: performance.timeOrigin + performance.now() };
};

const root = {
  user: ({ id }) => user(users.get(id)),
  users: () => [...users.values()].map(user),
  slowUser: async ({ id, ms }) => { await sleep(ms); return user(users.get(id)); },
  setName: ({ id, name }) => stamp(`${id}:${name}`),
  order: ({ id }) => {
    // An error as a careless service sends it: with its stack and an internal address.
    if (id === 'boom') {
      throw new GraphQLError('order store unavailable', {
        extensions: { code: 'DOWNSTREAM_FAILED', stacktrace: ['Error: connect ECONNREFUSED 10.0.0.7:5432', '    at /srv/orders/db.js:42:7'] },
      });
    }
    return orders.find((o) => o.id === id);
  },
  orders: ({ userId }) => orders.filter((o) => userId == null || o.userId === userId),
  slowOrder: async ({ id, ms }) => { await sleep(ms); return orders.find((o) => o.id === id); },
  createOrder: ({ item }) => stamp(item),
};

const handler = service === 'rest' ? null : createHandler({ schema: buildSchema(sdl[service]), rootValue: root });
const products = { p1: { id: 'p1', title: 'Loom', price: 1200 }, p2: { id: 'p2', title: 'Cards', price: 5 } };
const reviews = [
  { id: 'r1', product: 'p1', stars: 5 },
  { id: 'r2', product: 'p1', stars: 3 },
  { id: 'r3', product: 'p2', stars: 4 },
];
let calls = 0;
const rest = (req, res) => {
  const url = new URL(req.url, 'http://x');
  const json = (status, body) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  if (url.pathname === '/calls') return json(200, { calls });
  calls += 1;
  const product = url.pathname.match(/^\/products\/([^/]+)$/);
  if (product) {
    const p = products[decodeURIComponent(product[1])];
    return p ? json(200, { product: { ...p, seenAuth: req.headers['x-auth'] ?? null } }) : json(404, { error: 'no such product' });
  }
  if (url.pathname === '/reviews') {
    return json(200, reviews.filter((r) => r.product === url.searchParams.get('product')));
  }
  json(404, { error: 'not found' });
};

// The whole answer gzipped when the request accepts gzip: what graphql-http writes is
// held back, then sent once, encoded.
const compressing = (inner) => (req, res) => {
  if (!/\bgzip\b/i.test(req.headers['accept-encoding'] ?? '')) return inner(req, res);
  const writeHead = res.writeHead.bind(res);
  const end = res.end.bind(res);
  let head = [res.statusCode];
  const chunks = [];
  res.writeHead = (...args) => {
    head = args;
    return res;
  };
  res.write = (chunk) => {
    chunks.push(Buffer.from(chunk));
    return true;
  };
  res.end = (chunk) => {
    if (chunk) chunks.push(Buffer.from(chunk));
    const body = zlib.gzipSync(Buffer.concat(chunks));
    const [status, ...rest] = head;
    const given = rest.length && typeof rest[rest.length - 1] === 'object' ? rest[rest.length - 1] : {};
    const headers = Object.fromEntries(Object.entries(given).filter(([k]) => k.toLowerCase() !== 'content-length'));
    writeHead(status, { ...headers, 'content-encoding': 'gzip', 'content-length': body.length });
    return end(body);
  };
  return inner(req, res);
};

// Every path is the endpoint: the tests' plain route to the reference keeps its own path.
const server = http.createServer(service === 'rest' ? rest : compressing(handler));
server.listen(Number(port ?? 0), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
