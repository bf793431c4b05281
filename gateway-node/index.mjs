// ES module entry: the same objects as the CommonJS entry (one addon instance per process).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const gateway = require('./index.js');

export const {
  Gateway,
  GatewayResponse,
  GatewayServer,
  MockUpstream,
  translateRequest,
  translateResponse,
  DIALECTS,
} = gateway;
export default gateway;
