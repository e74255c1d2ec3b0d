var __create = Object.create;
var __defProp = Object.defineProperty;
var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
var __getOwnPropNames = Object.getOwnPropertyNames;
var __getProtoOf = Object.getPrototypeOf;
var __hasOwnProp = Object.prototype.hasOwnProperty;
var __commonJS = (cb, mod) => function __require() {
  try {
    return mod || (0, cb[__getOwnPropNames(cb)[0]])((mod = { exports: {} }).exports, mod), mod.exports;
  } catch (e) {
    throw mod = 0, e;
  }
};
var __copyProps = (to, from, except, desc) => {
  if (from && typeof from === "object" || typeof from === "function") {
    for (let key of __getOwnPropNames(from))
      if (!__hasOwnProp.call(to, key) && key !== except)
        __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
  }
  return to;
};
var __toESM = (mod, isNodeMode, target) => (target = mod != null ? __create(__getProtoOf(mod)) : {}, __copyProps(
  // If the importer is in node compatibility mode or this is not an ESM
  // file that has been converted to a CommonJS file using a Babel-
  // compatible transform (i.e. "__esModule" has not been set), then set
  // "default" to the CommonJS "module.exports" for node compatibility.
  isNodeMode || !mod || !mod.__esModule ? __defProp(target, "default", { value: mod, enumerable: true }) : target,
  mod
));

// node_modules/json-rpc-2.0/dist/models.js
var require_models = __commonJS({
  "node_modules/json-rpc-2.0/dist/models.js"(exports) {
    "use strict";
    var __extends = exports && exports.__extends || /* @__PURE__ */ (function() {
      var extendStatics = function(d, b) {
        extendStatics = Object.setPrototypeOf || { __proto__: [] } instanceof Array && function(d2, b2) {
          d2.__proto__ = b2;
        } || function(d2, b2) {
          for (var p in b2) if (Object.prototype.hasOwnProperty.call(b2, p)) d2[p] = b2[p];
        };
        return extendStatics(d, b);
      };
      return function(d, b) {
        if (typeof b !== "function" && b !== null)
          throw new TypeError("Class extends value " + String(b) + " is not a constructor or null");
        extendStatics(d, b);
        function __() {
          this.constructor = d;
        }
        d.prototype = b === null ? Object.create(b) : (__.prototype = b.prototype, new __());
      };
    })();
    Object.defineProperty(exports, "__esModule", { value: true });
    exports.createJSONRPCNotification = exports.createJSONRPCRequest = exports.createJSONRPCSuccessResponse = exports.createJSONRPCErrorResponse = exports.JSONRPCErrorCode = exports.JSONRPCErrorException = exports.isJSONRPCResponses = exports.isJSONRPCResponse = exports.isJSONRPCRequests = exports.isJSONRPCRequest = exports.isJSONRPCID = exports.JSONRPC = void 0;
    exports.JSONRPC = "2.0";
    var isJSONRPCID = function(id) {
      return typeof id === "string" || typeof id === "number" || id === null;
    };
    exports.isJSONRPCID = isJSONRPCID;
    var isJSONRPCRequest = function(payload) {
      return payload.jsonrpc === exports.JSONRPC && payload.method !== void 0 && payload.result === void 0 && payload.error === void 0;
    };
    exports.isJSONRPCRequest = isJSONRPCRequest;
    var isJSONRPCRequests = function(payload) {
      return Array.isArray(payload) && payload.every(exports.isJSONRPCRequest);
    };
    exports.isJSONRPCRequests = isJSONRPCRequests;
    var isJSONRPCResponse = function(payload) {
      return payload.jsonrpc === exports.JSONRPC && payload.id !== void 0 && (payload.result !== void 0 || payload.error !== void 0);
    };
    exports.isJSONRPCResponse = isJSONRPCResponse;
    var isJSONRPCResponses = function(payload) {
      return Array.isArray(payload) && payload.every(exports.isJSONRPCResponse);
    };
    exports.isJSONRPCResponses = isJSONRPCResponses;
    var createJSONRPCError = function(code, message, data) {
      var error = { code, message };
      if (data != null) {
        error.data = data;
      }
      return error;
    };
    var JSONRPCErrorException3 = (
      /** @class */
      (function(_super) {
        __extends(JSONRPCErrorException4, _super);
        function JSONRPCErrorException4(message, code, data) {
          var _this = _super.call(this, message) || this;
          Object.setPrototypeOf(_this, JSONRPCErrorException4.prototype);
          _this.code = code;
          _this.data = data;
          return _this;
        }
        JSONRPCErrorException4.prototype.toObject = function() {
          return createJSONRPCError(this.code, this.message, this.data);
        };
        return JSONRPCErrorException4;
      })(Error)
    );
    exports.JSONRPCErrorException = JSONRPCErrorException3;
    var JSONRPCErrorCode;
    (function(JSONRPCErrorCode2) {
      JSONRPCErrorCode2[JSONRPCErrorCode2["ParseError"] = -32700] = "ParseError";
      JSONRPCErrorCode2[JSONRPCErrorCode2["InvalidRequest"] = -32600] = "InvalidRequest";
      JSONRPCErrorCode2[JSONRPCErrorCode2["MethodNotFound"] = -32601] = "MethodNotFound";
      JSONRPCErrorCode2[JSONRPCErrorCode2["InvalidParams"] = -32602] = "InvalidParams";
      JSONRPCErrorCode2[JSONRPCErrorCode2["InternalError"] = -32603] = "InternalError";
    })(JSONRPCErrorCode = exports.JSONRPCErrorCode || (exports.JSONRPCErrorCode = {}));
    var createJSONRPCErrorResponse = function(id, code, message, data) {
      return {
        jsonrpc: exports.JSONRPC,
        id,
        error: createJSONRPCError(code, message, data)
      };
    };
    exports.createJSONRPCErrorResponse = createJSONRPCErrorResponse;
    var createJSONRPCSuccessResponse = function(id, result) {
      return {
        jsonrpc: exports.JSONRPC,
        id,
        result: result !== null && result !== void 0 ? result : null
      };
    };
    exports.createJSONRPCSuccessResponse = createJSONRPCSuccessResponse;
    var createJSONRPCRequest = function(id, method, params) {
      return {
        jsonrpc: exports.JSONRPC,
        id,
        method,
        params
      };
    };
    exports.createJSONRPCRequest = createJSONRPCRequest;
    var createJSONRPCNotification = function(method, params) {
      return {
        jsonrpc: exports.JSONRPC,
        method,
        params
      };
    };
    exports.createJSONRPCNotification = createJSONRPCNotification;
  }
});

// node_modules/json-rpc-2.0/dist/internal.js
var require_internal = __commonJS({
  "node_modules/json-rpc-2.0/dist/internal.js"(exports) {
    "use strict";
    Object.defineProperty(exports, "__esModule", { value: true });
    exports.DefaultErrorCode = void 0;
    exports.DefaultErrorCode = 0;
  }
});

// node_modules/json-rpc-2.0/dist/client.js
var require_client = __commonJS({
  "node_modules/json-rpc-2.0/dist/client.js"(exports) {
    "use strict";
    var __awaiter = exports && exports.__awaiter || function(thisArg, _arguments, P, generator) {
      function adopt(value) {
        return value instanceof P ? value : new P(function(resolve) {
          resolve(value);
        });
      }
      return new (P || (P = Promise))(function(resolve, reject) {
        function fulfilled(value) {
          try {
            step(generator.next(value));
          } catch (e) {
            reject(e);
          }
        }
        function rejected(value) {
          try {
            step(generator["throw"](value));
          } catch (e) {
            reject(e);
          }
        }
        function step(result) {
          result.done ? resolve(result.value) : adopt(result.value).then(fulfilled, rejected);
        }
        step((generator = generator.apply(thisArg, _arguments || [])).next());
      });
    };
    var __generator = exports && exports.__generator || function(thisArg, body) {
      var _ = { label: 0, sent: function() {
        if (t[0] & 1) throw t[1];
        return t[1];
      }, trys: [], ops: [] }, f, y, t, g;
      return g = { next: verb(0), "throw": verb(1), "return": verb(2) }, typeof Symbol === "function" && (g[Symbol.iterator] = function() {
        return this;
      }), g;
      function verb(n) {
        return function(v) {
          return step([n, v]);
        };
      }
      function step(op) {
        if (f) throw new TypeError("Generator is already executing.");
        while (g && (g = 0, op[0] && (_ = 0)), _) try {
          if (f = 1, y && (t = op[0] & 2 ? y["return"] : op[0] ? y["throw"] || ((t = y["return"]) && t.call(y), 0) : y.next) && !(t = t.call(y, op[1])).done) return t;
          if (y = 0, t) op = [op[0] & 2, t.value];
          switch (op[0]) {
            case 0:
            case 1:
              t = op;
              break;
            case 4:
              _.label++;
              return { value: op[1], done: false };
            case 5:
              _.label++;
              y = op[1];
              op = [0];
              continue;
            case 7:
              op = _.ops.pop();
              _.trys.pop();
              continue;
            default:
              if (!(t = _.trys, t = t.length > 0 && t[t.length - 1]) && (op[0] === 6 || op[0] === 2)) {
                _ = 0;
                continue;
              }
              if (op[0] === 3 && (!t || op[1] > t[0] && op[1] < t[3])) {
                _.label = op[1];
                break;
              }
              if (op[0] === 6 && _.label < t[1]) {
                _.label = t[1];
                t = op;
                break;
              }
              if (t && _.label < t[2]) {
                _.label = t[2];
                _.ops.push(op);
                break;
              }
              if (t[2]) _.ops.pop();
              _.trys.pop();
              continue;
          }
          op = body.call(thisArg, _);
        } catch (e) {
          op = [6, e];
          y = 0;
        } finally {
          f = t = 0;
        }
        if (op[0] & 5) throw op[1];
        return { value: op[0] ? op[1] : void 0, done: true };
      }
    };
    Object.defineProperty(exports, "__esModule", { value: true });
    exports.JSONRPCClient = void 0;
    var models_1 = require_models();
    var internal_1 = require_internal();
    var JSONRPCClient2 = (
      /** @class */
      (function() {
        function JSONRPCClient3(_send, createID) {
          this._send = _send;
          this.createID = createID;
          this.idToResolveMap = /* @__PURE__ */ new Map();
          this.id = 0;
        }
        JSONRPCClient3.prototype._createID = function() {
          if (this.createID) {
            return this.createID();
          } else {
            return ++this.id;
          }
        };
        JSONRPCClient3.prototype.timeout = function(delay, overrideCreateJSONRPCErrorResponse) {
          var _this = this;
          if (overrideCreateJSONRPCErrorResponse === void 0) {
            overrideCreateJSONRPCErrorResponse = function(id) {
              return (0, models_1.createJSONRPCErrorResponse)(id, internal_1.DefaultErrorCode, "Request timeout");
            };
          }
          var timeoutRequest = function(ids, request) {
            var timeoutID = setTimeout(function() {
              ids.forEach(function(id) {
                var resolve = _this.idToResolveMap.get(id);
                if (resolve) {
                  _this.idToResolveMap.delete(id);
                  resolve(overrideCreateJSONRPCErrorResponse(id));
                }
              });
            }, delay);
            return request().then(function(result) {
              clearTimeout(timeoutID);
              return result;
            }, function(error) {
              clearTimeout(timeoutID);
              return Promise.reject(error);
            });
          };
          var requestAdvanced = function(request, clientParams) {
            var ids = (!Array.isArray(request) ? [request] : request).map(function(request2) {
              return request2.id;
            }).filter(isDefinedAndNonNull);
            return timeoutRequest(ids, function() {
              return _this.requestAdvanced(request, clientParams);
            });
          };
          return {
            request: function(method, params, clientParams) {
              var id = _this._createID();
              return timeoutRequest([id], function() {
                return _this.requestWithID(method, params, clientParams, id);
              });
            },
            requestAdvanced: function(request, clientParams) {
              return requestAdvanced(request, clientParams);
            }
          };
        };
        JSONRPCClient3.prototype.request = function(method, params, clientParams) {
          return this.requestWithID(method, params, clientParams, this._createID());
        };
        JSONRPCClient3.prototype.requestWithID = function(method, params, clientParams, id) {
          return __awaiter(this, void 0, void 0, function() {
            var request, response;
            return __generator(this, function(_a) {
              switch (_a.label) {
                case 0:
                  request = (0, models_1.createJSONRPCRequest)(id, method, params);
                  return [4, this.requestAdvanced(request, clientParams)];
                case 1:
                  response = _a.sent();
                  if (response.result !== void 0 && !response.error) {
                    return [2, response.result];
                  } else if (response.result === void 0 && response.error) {
                    return [2, Promise.reject(new models_1.JSONRPCErrorException(response.error.message, response.error.code, response.error.data))];
                  } else {
                    return [2, Promise.reject(new Error("An unexpected error occurred"))];
                  }
                  return [
                    2
                    /*return*/
                  ];
              }
            });
          });
        };
        JSONRPCClient3.prototype.requestAdvanced = function(requests, clientParams) {
          var _this = this;
          var areRequestsOriginallyArray = Array.isArray(requests);
          if (!Array.isArray(requests)) {
            requests = [requests];
          }
          var requestsWithID = requests.filter(function(request) {
            return isDefinedAndNonNull(request.id);
          });
          var promises = requestsWithID.map(function(request) {
            return new Promise(function(resolve) {
              return _this.idToResolveMap.set(request.id, resolve);
            });
          });
          var promise = Promise.all(promises).then(function(responses) {
            if (areRequestsOriginallyArray || !responses.length) {
              return responses;
            } else {
              return responses[0];
            }
          });
          return this.send(areRequestsOriginallyArray ? requests : requests[0], clientParams).then(function() {
            return promise;
          }, function(error) {
            requestsWithID.forEach(function(request) {
              _this.receive((0, models_1.createJSONRPCErrorResponse)(request.id, internal_1.DefaultErrorCode, error && error.message || "Failed to send a request"));
            });
            return promise;
          });
        };
        JSONRPCClient3.prototype.notify = function(method, params, clientParams) {
          var request = (0, models_1.createJSONRPCNotification)(method, params);
          this.send(request, clientParams).then(void 0, function() {
            return void 0;
          });
        };
        JSONRPCClient3.prototype.send = function(payload, clientParams) {
          return __awaiter(this, void 0, void 0, function() {
            return __generator(this, function(_a) {
              return [2, this._send(payload, clientParams)];
            });
          });
        };
        JSONRPCClient3.prototype.rejectAllPendingRequests = function(message) {
          this.idToResolveMap.forEach(function(resolve, id) {
            return resolve((0, models_1.createJSONRPCErrorResponse)(id, internal_1.DefaultErrorCode, message));
          });
          this.idToResolveMap.clear();
        };
        JSONRPCClient3.prototype.receive = function(responses) {
          var _this = this;
          if (!Array.isArray(responses)) {
            responses = [responses];
          }
          responses.forEach(function(response) {
            var resolve = _this.idToResolveMap.get(response.id);
            if (resolve) {
              _this.idToResolveMap.delete(response.id);
              resolve(response);
            }
          });
        };
        return JSONRPCClient3;
      })()
    );
    exports.JSONRPCClient = JSONRPCClient2;
    var isDefinedAndNonNull = function(value) {
      return value !== void 0 && value !== null;
    };
  }
});

// node_modules/json-rpc-2.0/dist/interfaces.js
var require_interfaces = __commonJS({
  "node_modules/json-rpc-2.0/dist/interfaces.js"(exports) {
    "use strict";
    Object.defineProperty(exports, "__esModule", { value: true });
  }
});

// node_modules/json-rpc-2.0/dist/server.js
var require_server = __commonJS({
  "node_modules/json-rpc-2.0/dist/server.js"(exports) {
    "use strict";
    var __awaiter = exports && exports.__awaiter || function(thisArg, _arguments, P, generator) {
      function adopt(value) {
        return value instanceof P ? value : new P(function(resolve) {
          resolve(value);
        });
      }
      return new (P || (P = Promise))(function(resolve, reject) {
        function fulfilled(value) {
          try {
            step(generator.next(value));
          } catch (e) {
            reject(e);
          }
        }
        function rejected(value) {
          try {
            step(generator["throw"](value));
          } catch (e) {
            reject(e);
          }
        }
        function step(result) {
          result.done ? resolve(result.value) : adopt(result.value).then(fulfilled, rejected);
        }
        step((generator = generator.apply(thisArg, _arguments || [])).next());
      });
    };
    var __generator = exports && exports.__generator || function(thisArg, body) {
      var _ = { label: 0, sent: function() {
        if (t[0] & 1) throw t[1];
        return t[1];
      }, trys: [], ops: [] }, f, y, t, g;
      return g = { next: verb(0), "throw": verb(1), "return": verb(2) }, typeof Symbol === "function" && (g[Symbol.iterator] = function() {
        return this;
      }), g;
      function verb(n) {
        return function(v) {
          return step([n, v]);
        };
      }
      function step(op) {
        if (f) throw new TypeError("Generator is already executing.");
        while (g && (g = 0, op[0] && (_ = 0)), _) try {
          if (f = 1, y && (t = op[0] & 2 ? y["return"] : op[0] ? y["throw"] || ((t = y["return"]) && t.call(y), 0) : y.next) && !(t = t.call(y, op[1])).done) return t;
          if (y = 0, t) op = [op[0] & 2, t.value];
          switch (op[0]) {
            case 0:
            case 1:
              t = op;
              break;
            case 4:
              _.label++;
              return { value: op[1], done: false };
            case 5:
              _.label++;
              y = op[1];
              op = [0];
              continue;
            case 7:
              op = _.ops.pop();
              _.trys.pop();
              continue;
            default:
              if (!(t = _.trys, t = t.length > 0 && t[t.length - 1]) && (op[0] === 6 || op[0] === 2)) {
                _ = 0;
                continue;
              }
              if (op[0] === 3 && (!t || op[1] > t[0] && op[1] < t[3])) {
                _.label = op[1];
                break;
              }
              if (op[0] === 6 && _.label < t[1]) {
                _.label = t[1];
                t = op;
                break;
              }
              if (t && _.label < t[2]) {
                _.label = t[2];
                _.ops.push(op);
                break;
              }
              if (t[2]) _.ops.pop();
              _.trys.pop();
              continue;
          }
          op = body.call(thisArg, _);
        } catch (e) {
          op = [6, e];
          y = 0;
        } finally {
          f = t = 0;
        }
        if (op[0] & 5) throw op[1];
        return { value: op[0] ? op[1] : void 0, done: true };
      }
    };
    var __spreadArray = exports && exports.__spreadArray || function(to, from, pack) {
      if (pack || arguments.length === 2) for (var i = 0, l = from.length, ar; i < l; i++) {
        if (ar || !(i in from)) {
          if (!ar) ar = Array.prototype.slice.call(from, 0, i);
          ar[i] = from[i];
        }
      }
      return to.concat(ar || Array.prototype.slice.call(from));
    };
    Object.defineProperty(exports, "__esModule", { value: true });
    exports.JSONRPCServer = exports.createMethodNotFoundResponse = exports.createInvalidRequestResponse = void 0;
    var models_1 = require_models();
    var internal_1 = require_internal();
    var createParseErrorResponse = function() {
      return (0, models_1.createJSONRPCErrorResponse)(null, models_1.JSONRPCErrorCode.ParseError, "Parse error");
    };
    var createInvalidRequestResponse = function(request) {
      return (0, models_1.createJSONRPCErrorResponse)((0, models_1.isJSONRPCID)(request.id) ? request.id : null, models_1.JSONRPCErrorCode.InvalidRequest, "Invalid Request");
    };
    exports.createInvalidRequestResponse = createInvalidRequestResponse;
    var createMethodNotFoundResponse = function(id) {
      return (0, models_1.createJSONRPCErrorResponse)(id, models_1.JSONRPCErrorCode.MethodNotFound, "Method not found");
    };
    exports.createMethodNotFoundResponse = createMethodNotFoundResponse;
    var JSONRPCServer2 = (
      /** @class */
      (function() {
        function JSONRPCServer3(options) {
          if (options === void 0) {
            options = {};
          }
          var _a;
          this.mapErrorToJSONRPCErrorResponse = defaultMapErrorToJSONRPCErrorResponse;
          this.handleMethodNotFound = defaultHandleMethodNotFound;
          this.nameToMethodMap = /* @__PURE__ */ new Map();
          this.middleware = null;
          this.errorListener = (_a = options.errorListener) !== null && _a !== void 0 ? _a : console.warn;
        }
        JSONRPCServer3.prototype.hasMethod = function(name) {
          return this.nameToMethodMap.has(name);
        };
        JSONRPCServer3.prototype.addMethod = function(name, method) {
          this.addMethodAdvanced(name, this.toJSONRPCMethod(method));
        };
        JSONRPCServer3.prototype.removeMethod = function(name) {
          this.nameToMethodMap.delete(name);
        };
        JSONRPCServer3.prototype.toJSONRPCMethod = function(method) {
          return function(request, serverParams) {
            var response = method(request.params, serverParams);
            return Promise.resolve(response).then(function(result) {
              return mapResultToJSONRPCResponse(request.id, result);
            });
          };
        };
        JSONRPCServer3.prototype.addMethodAdvanced = function(name, method) {
          this.nameToMethodMap.set(name, method);
        };
        JSONRPCServer3.prototype.receiveJSON = function(json, serverParams) {
          var request = this.tryParseRequestJSON(json);
          if (request) {
            return this.receive(request, serverParams);
          } else {
            return Promise.resolve(createParseErrorResponse());
          }
        };
        JSONRPCServer3.prototype.tryParseRequestJSON = function(json) {
          try {
            return JSON.parse(json);
          } catch (_a) {
            return null;
          }
        };
        JSONRPCServer3.prototype.receive = function(request, serverParams) {
          if (Array.isArray(request)) {
            return this.receiveMultiple(request, serverParams);
          } else {
            return this.receiveSingle(request, serverParams);
          }
        };
        JSONRPCServer3.prototype.receiveMultiple = function(requests, serverParams) {
          return __awaiter(this, void 0, void 0, function() {
            var responses;
            var _this = this;
            return __generator(this, function(_a) {
              switch (_a.label) {
                case 0:
                  if (requests.length === 0) {
                    return [2, (0, models_1.createJSONRPCErrorResponse)(null, models_1.JSONRPCErrorCode.InvalidRequest, "Invalid Request")];
                  }
                  return [4, Promise.all(requests.map(function(request) {
                    return _this.receiveSingle(request, serverParams);
                  }))];
                case 1:
                  responses = _a.sent().filter(isNonNull);
                  if (responses.length === 1) {
                    return [2, responses[0]];
                  } else if (responses.length) {
                    return [2, responses];
                  } else {
                    return [2, null];
                  }
                  return [
                    2
                    /*return*/
                  ];
              }
            });
          });
        };
        JSONRPCServer3.prototype.receiveSingle = function(request, serverParams) {
          return __awaiter(this, void 0, void 0, function() {
            var method, response;
            return __generator(this, function(_a) {
              switch (_a.label) {
                case 0:
                  method = this.nameToMethodMap.get(request.method);
                  if (!!(0, models_1.isJSONRPCRequest)(request)) return [3, 1];
                  return [2, (0, exports.createInvalidRequestResponse)(request)];
                case 1:
                  return [4, this.callMethod(method, request, serverParams)];
                case 2:
                  response = _a.sent();
                  return [2, mapResponse(request, response)];
              }
            });
          });
        };
        JSONRPCServer3.prototype.applyMiddleware = function() {
          var middlewares = [];
          for (var _i = 0; _i < arguments.length; _i++) {
            middlewares[_i] = arguments[_i];
          }
          if (this.middleware) {
            this.middleware = this.combineMiddlewares(__spreadArray([
              this.middleware
            ], middlewares, true));
          } else {
            this.middleware = this.combineMiddlewares(middlewares);
          }
        };
        JSONRPCServer3.prototype.combineMiddlewares = function(middlewares) {
          if (!middlewares.length) {
            return null;
          } else {
            return middlewares.reduce(this.middlewareReducer);
          }
        };
        JSONRPCServer3.prototype.middlewareReducer = function(prevMiddleware, nextMiddleware) {
          return function(next, request, serverParams) {
            return prevMiddleware(function(request2, serverParams2) {
              return nextMiddleware(next, request2, serverParams2);
            }, request, serverParams);
          };
        };
        JSONRPCServer3.prototype.callMethod = function(method, request, serverParams) {
          var _this = this;
          var callMethod = function(request2, serverParams2) {
            if (method) {
              return method(request2, serverParams2);
            } else {
              return _this.handleMethodNotFound(request2, serverParams2);
            }
          };
          var onError = function(error) {
            _this.errorListener('An unexpected error occurred while executing "'.concat(request.method, '" JSON-RPC method:'), error);
            return Promise.resolve(_this.mapErrorToJSONRPCErrorResponseIfNecessary(request.id, error));
          };
          try {
            return (this.middleware || noopMiddleware)(callMethod, request, serverParams).then(void 0, onError);
          } catch (error) {
            return onError(error);
          }
        };
        JSONRPCServer3.prototype.mapErrorToJSONRPCErrorResponseIfNecessary = function(id, error) {
          if (id !== void 0) {
            return this.mapErrorToJSONRPCErrorResponse(id, error);
          } else {
            return null;
          }
        };
        return JSONRPCServer3;
      })()
    );
    exports.JSONRPCServer = JSONRPCServer2;
    var isNonNull = function(value) {
      return value !== null;
    };
    var noopMiddleware = function(next, request, serverParams) {
      return next(request, serverParams);
    };
    var mapResultToJSONRPCResponse = function(id, result) {
      if (id !== void 0) {
        return (0, models_1.createJSONRPCSuccessResponse)(id, result);
      } else {
        return null;
      }
    };
    var defaultMapErrorToJSONRPCErrorResponse = function(id, error) {
      var _a;
      var message = (_a = error === null || error === void 0 ? void 0 : error.message) !== null && _a !== void 0 ? _a : "An unexpected error occurred";
      var code = internal_1.DefaultErrorCode;
      var data;
      if (error instanceof models_1.JSONRPCErrorException) {
        code = error.code;
        data = error.data;
      }
      return (0, models_1.createJSONRPCErrorResponse)(id, code, message, data);
    };
    var defaultHandleMethodNotFound = function(request) {
      return __awaiter(void 0, void 0, void 0, function() {
        return __generator(this, function(_a) {
          if (request.id !== void 0) {
            return [2, (0, exports.createMethodNotFoundResponse)(request.id)];
          } else {
            return [2, null];
          }
          return [
            2
            /*return*/
          ];
        });
      });
    };
    var mapResponse = function(request, response) {
      if (response) {
        return response;
      } else if (request.id !== void 0) {
        return (0, models_1.createJSONRPCErrorResponse)(request.id, models_1.JSONRPCErrorCode.InternalError, "Internal error");
      } else {
        return null;
      }
    };
  }
});

// node_modules/json-rpc-2.0/dist/server-and-client.js
var require_server_and_client = __commonJS({
  "node_modules/json-rpc-2.0/dist/server-and-client.js"(exports) {
    "use strict";
    var __awaiter = exports && exports.__awaiter || function(thisArg, _arguments, P, generator) {
      function adopt(value) {
        return value instanceof P ? value : new P(function(resolve) {
          resolve(value);
        });
      }
      return new (P || (P = Promise))(function(resolve, reject) {
        function fulfilled(value) {
          try {
            step(generator.next(value));
          } catch (e) {
            reject(e);
          }
        }
        function rejected(value) {
          try {
            step(generator["throw"](value));
          } catch (e) {
            reject(e);
          }
        }
        function step(result) {
          result.done ? resolve(result.value) : adopt(result.value).then(fulfilled, rejected);
        }
        step((generator = generator.apply(thisArg, _arguments || [])).next());
      });
    };
    var __generator = exports && exports.__generator || function(thisArg, body) {
      var _ = { label: 0, sent: function() {
        if (t[0] & 1) throw t[1];
        return t[1];
      }, trys: [], ops: [] }, f, y, t, g;
      return g = { next: verb(0), "throw": verb(1), "return": verb(2) }, typeof Symbol === "function" && (g[Symbol.iterator] = function() {
        return this;
      }), g;
      function verb(n) {
        return function(v) {
          return step([n, v]);
        };
      }
      function step(op) {
        if (f) throw new TypeError("Generator is already executing.");
        while (g && (g = 0, op[0] && (_ = 0)), _) try {
          if (f = 1, y && (t = op[0] & 2 ? y["return"] : op[0] ? y["throw"] || ((t = y["return"]) && t.call(y), 0) : y.next) && !(t = t.call(y, op[1])).done) return t;
          if (y = 0, t) op = [op[0] & 2, t.value];
          switch (op[0]) {
            case 0:
            case 1:
              t = op;
              break;
            case 4:
              _.label++;
              return { value: op[1], done: false };
            case 5:
              _.label++;
              y = op[1];
              op = [0];
              continue;
            case 7:
              op = _.ops.pop();
              _.trys.pop();
              continue;
            default:
              if (!(t = _.trys, t = t.length > 0 && t[t.length - 1]) && (op[0] === 6 || op[0] === 2)) {
                _ = 0;
                continue;
              }
              if (op[0] === 3 && (!t || op[1] > t[0] && op[1] < t[3])) {
                _.label = op[1];
                break;
              }
              if (op[0] === 6 && _.label < t[1]) {
                _.label = t[1];
                t = op;
                break;
              }
              if (t && _.label < t[2]) {
                _.label = t[2];
                _.ops.push(op);
                break;
              }
              if (t[2]) _.ops.pop();
              _.trys.pop();
              continue;
          }
          op = body.call(thisArg, _);
        } catch (e) {
          op = [6, e];
          y = 0;
        } finally {
          f = t = 0;
        }
        if (op[0] & 5) throw op[1];
        return { value: op[0] ? op[1] : void 0, done: true };
      }
    };
    Object.defineProperty(exports, "__esModule", { value: true });
    exports.JSONRPCServerAndClient = void 0;
    var models_1 = require_models();
    var JSONRPCServerAndClient2 = (
      /** @class */
      (function() {
        function JSONRPCServerAndClient3(server, client, options) {
          if (options === void 0) {
            options = {};
          }
          var _a;
          this.server = server;
          this.client = client;
          this.errorListener = (_a = options.errorListener) !== null && _a !== void 0 ? _a : console.warn;
        }
        JSONRPCServerAndClient3.prototype.applyServerMiddleware = function() {
          var _a;
          var middlewares = [];
          for (var _i = 0; _i < arguments.length; _i++) {
            middlewares[_i] = arguments[_i];
          }
          (_a = this.server).applyMiddleware.apply(_a, middlewares);
        };
        JSONRPCServerAndClient3.prototype.hasMethod = function(name) {
          return this.server.hasMethod(name);
        };
        JSONRPCServerAndClient3.prototype.addMethod = function(name, method) {
          this.server.addMethod(name, method);
        };
        JSONRPCServerAndClient3.prototype.addMethodAdvanced = function(name, method) {
          this.server.addMethodAdvanced(name, method);
        };
        JSONRPCServerAndClient3.prototype.removeMethod = function(name) {
          this.server.removeMethod(name);
        };
        JSONRPCServerAndClient3.prototype.timeout = function(delay) {
          return this.client.timeout(delay);
        };
        JSONRPCServerAndClient3.prototype.request = function(method, params, clientParams) {
          return this.client.request(method, params, clientParams);
        };
        JSONRPCServerAndClient3.prototype.requestAdvanced = function(jsonRPCRequest, clientParams) {
          return this.client.requestAdvanced(jsonRPCRequest, clientParams);
        };
        JSONRPCServerAndClient3.prototype.notify = function(method, params, clientParams) {
          this.client.notify(method, params, clientParams);
        };
        JSONRPCServerAndClient3.prototype.rejectAllPendingRequests = function(message) {
          this.client.rejectAllPendingRequests(message);
        };
        JSONRPCServerAndClient3.prototype.receiveAndSend = function(payload, serverParams, clientParams) {
          return __awaiter(this, void 0, void 0, function() {
            var response, message;
            return __generator(this, function(_a) {
              switch (_a.label) {
                case 0:
                  if (!((0, models_1.isJSONRPCResponse)(payload) || (0, models_1.isJSONRPCResponses)(payload))) return [3, 1];
                  this.client.receive(payload);
                  return [3, 4];
                case 1:
                  if (!((0, models_1.isJSONRPCRequest)(payload) || (0, models_1.isJSONRPCRequests)(payload))) return [3, 3];
                  return [4, this.server.receive(payload, serverParams)];
                case 2:
                  response = _a.sent();
                  if (response) {
                    return [2, this.client.send(response, clientParams)];
                  }
                  return [3, 4];
                case 3:
                  message = "Received an invalid JSON-RPC message";
                  this.errorListener(message, payload);
                  return [2, Promise.reject(new Error(message))];
                case 4:
                  return [
                    2
                    /*return*/
                  ];
              }
            });
          });
        };
        return JSONRPCServerAndClient3;
      })()
    );
    exports.JSONRPCServerAndClient = JSONRPCServerAndClient2;
  }
});

// node_modules/json-rpc-2.0/dist/index.js
var require_dist = __commonJS({
  "node_modules/json-rpc-2.0/dist/index.js"(exports) {
    "use strict";
    var __createBinding = exports && exports.__createBinding || (Object.create ? (function(o, m, k, k2) {
      if (k2 === void 0) k2 = k;
      var desc = Object.getOwnPropertyDescriptor(m, k);
      if (!desc || ("get" in desc ? !m.__esModule : desc.writable || desc.configurable)) {
        desc = { enumerable: true, get: function() {
          return m[k];
        } };
      }
      Object.defineProperty(o, k2, desc);
    }) : (function(o, m, k, k2) {
      if (k2 === void 0) k2 = k;
      o[k2] = m[k];
    }));
    var __exportStar = exports && exports.__exportStar || function(m, exports2) {
      for (var p in m) if (p !== "default" && !Object.prototype.hasOwnProperty.call(exports2, p)) __createBinding(exports2, m, p);
    };
    Object.defineProperty(exports, "__esModule", { value: true });
    __exportStar(require_client(), exports);
    __exportStar(require_interfaces(), exports);
    __exportStar(require_models(), exports);
    __exportStar(require_server(), exports);
    __exportStar(require_server_and_client(), exports);
  }
});

// ../simple/ts/capability.ts
var GroupCapability = /* @__PURE__ */ ((GroupCapability2) => {
  GroupCapability2[GroupCapability2["BroadcastOwner"] = 1] = "BroadcastOwner";
  GroupCapability2[GroupCapability2["BroadcastEveryone"] = 2] = "BroadcastEveryone";
  GroupCapability2[GroupCapability2["UnicastOwner"] = 4] = "UnicastOwner";
  GroupCapability2[GroupCapability2["UnicastEveryone"] = 8] = "UnicastEveryone";
  return GroupCapability2;
})(GroupCapability || {});
var DEFAULT_CAPABILITY = 2 /* BroadcastEveryone */ | 8 /* UnicastEveryone */;
function allows(rules, ownerBit, everyoneBit, a, b) {
  if (a === b) return false;
  if ((rules.capability & everyoneBit) !== 0) return true;
  return (rules.capability & ownerBit) !== 0 && (a === rules.owner || b === rules.owner);
}
function mayBroadcast(rules, a, b) {
  return allows(rules, 1 /* BroadcastOwner */, 2 /* BroadcastEveryone */, a, b);
}
function mayUnicast(rules, a, b) {
  return allows(rules, 4 /* UnicastOwner */, 8 /* UnicastEveryone */, a, b);
}
function mayLink(rules, a, b) {
  return mayBroadcast(rules, a, b) || mayUnicast(rules, a, b);
}

// ../simple/ts/errors.ts
var import_json_rpc_2 = __toESM(require_dist());

// ../typings/ErrorCode.ts
var ErrorCode = {
  /** not initialized: call init first. */
  NotInitialized: -32001,
  /** already initialized. */
  AlreadyInitialized: -32002,
  /** group not found. */
  GroupNotFound: -32003,
  /** not a member of that group. */
  NotAMember: -32004,
  /** user not found in that group. */
  UserNotFound: -32005,
  /** permission denied by the group's capability. */
  PermissionDenied: -32006,
  /** relay timed out: the target did not answer in time. */
  RelayTimeout: -32007,
  /** peer gone: the target disconnected before answering. */
  PeerGone: -32008,
  /** busy: too many requests in flight. */
  Busy: -32009,
  /** limit exceeded. */
  LimitExceeded: -32010
};

// ../simple/ts/errors.ts
var ErrorCode2 = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** Never on the wire: the WebSocket is gone. */
  ConnectionClosed: -32e3,
  ...ErrorCode,
  /** From one client to another: the answer of a member without WebRTC to an offer. */
  NoWebRtc: -32011
};
var RpcError = class extends Error {
  name = "RpcError";
  code;
  data;
  constructor(code, message, data) {
    super(message);
    this.code = code;
    if (data !== void 0) this.data = data;
  }
  /** The shape json-rpc-2.0 answers a request with when a method throws it. */
  toException() {
    return new import_json_rpc_2.JSONRPCErrorException(this.message, this.code, this.data);
  }
};
function toRpcError(error) {
  if (error instanceof RpcError) return error;
  if (error instanceof import_json_rpc_2.JSONRPCErrorException) {
    return error.code === 0 ? new RpcError(ErrorCode2.ConnectionClosed, error.message) : new RpcError(error.code, error.message, error.data);
  }
  return new RpcError(ErrorCode2.InternalError, error instanceof Error ? error.message : String(error));
}

// ../simple/ts/payload.ts
var FrameKind = /* @__PURE__ */ ((FrameKind2) => {
  FrameKind2[FrameKind2["Broadcast"] = 0] = "Broadcast";
  FrameKind2[FrameKind2["Request"] = 1] = "Request";
  FrameKind2[FrameKind2["Reply"] = 2] = "Reply";
  FrameKind2[FrameKind2["Error"] = 3] = "Error";
  return FrameKind2;
})(FrameKind || {});
var BodyType = /* @__PURE__ */ ((BodyType2) => {
  BodyType2[BodyType2["Text"] = 0] = "Text";
  BodyType2[BodyType2["Bytes"] = 1] = "Bytes";
  return BodyType2;
})(BodyType || {});
var HEADER_BYTES = 6;
var MAX_BODY_BYTES = 256 * 1024 - HEADER_BYTES;
var encoder = new TextEncoder();
var decoder = new TextDecoder("utf-8", { fatal: true });
function toBody(data) {
  const body = typeof data === "string" ? data : data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const size = typeof body !== "string" ? body.byteLength : body.length * 3 > MAX_BODY_BYTES ? encoder.encode(body).byteLength : 0;
  if (size > MAX_BODY_BYTES) {
    throw new RpcError(ErrorCode2.LimitExceeded, `a message may carry at most ${MAX_BODY_BYTES} bytes, not ${size}`);
  }
  return body;
}
function encodeFrame(frame) {
  const bytes = typeof frame.body === "string" ? encoder.encode(frame.body) : frame.body;
  const out = new Uint8Array(HEADER_BYTES + bytes.byteLength);
  const header = new DataView(out.buffer);
  header.setUint8(0, frame.kind);
  header.setUint8(1, typeof frame.body === "string" ? 0 /* Text */ : 1 /* Bytes */);
  header.setUint32(2, frame.id);
  out.set(bytes, HEADER_BYTES);
  return out;
}
function decodeFrame(message) {
  if (!(message instanceof ArrayBuffer) || message.byteLength < HEADER_BYTES) return void 0;
  const header = new DataView(message);
  const kind = header.getUint8(0);
  const type = header.getUint8(1);
  if (!(kind in FrameKind) || !(type in BodyType)) return void 0;
  const bytes = new Uint8Array(message.slice(HEADER_BYTES));
  try {
    const body = type === 0 /* Text */ ? decoder.decode(bytes) : bytes;
    return { kind, id: header.getUint32(2), body };
  } catch {
    return void 0;
  }
}
function errorBody(error) {
  return JSON.stringify({ code: error.code, message: error.message });
}
function errorFromBody(body) {
  try {
    const parsed = JSON.parse(typeof body === "string" ? body : decoder.decode(body));
    if (isRecord(parsed) && typeof parsed["code"] === "number" && typeof parsed["message"] === "string") {
      return new RpcError(parsed["code"], parsed["message"]);
    }
  } catch {
  }
  return new RpcError(ErrorCode2.InternalError, "malformed error reply");
}
function toRelayBody(body) {
  return typeof body === "string" ? { text: body } : { base64: toBase64(body) };
}
function fromRelayBody(value) {
  if (!isRecord(value)) return void 0;
  const { text, base64 } = value;
  if (typeof text === "string") return text;
  if (typeof base64 === "string") {
    try {
      return fromBase64(base64);
    } catch {
      return void 0;
    }
  }
  return void 0;
}
function parseRelayed(data) {
  if (!isRecord(data)) return void 0;
  const { signal, broadcast, unicast } = data;
  if (isRecord(signal)) {
    const { description, candidate, webrtc } = signal;
    if (isRecord(description) && typeof description["type"] === "string") {
      return { kind: "description", description };
    }
    if (isRecord(candidate)) return { kind: "candidate", candidate };
    if (webrtc === false) return { kind: "nowebrtc" };
    return void 0;
  }
  const body = fromRelayBody(broadcast ?? unicast);
  if (body === void 0) return void 0;
  return broadcast !== void 0 ? { kind: "broadcast", body } : { kind: "unicast", body };
}
function offerTaken(answer) {
  return answer === null;
}
function isRecord(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
var BASE64_CHUNK_BYTES = 32768;
function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += BASE64_CHUNK_BYTES) {
    binary += String.fromCharCode(...bytes.subarray(i, i + BASE64_CHUNK_BYTES));
  }
  return btoa(binary);
}
function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// ../simple/ts/service.ts
var import_json_rpc_22 = __toESM(require_dist());

// ../simple/ts/certificate.ts
var CERTIFICATE_KEY = { name: "ECDSA", namedCurve: "P-256" };
async function generateCertificate() {
  if (typeof RTCPeerConnection === "undefined" || typeof RTCPeerConnection.generateCertificate !== "function") {
    return void 0;
  }
  try {
    return await RTCPeerConnection.generateCertificate(CERTIFICATE_KEY);
  } catch {
    return void 0;
  }
}
function withCertificate(rtcConfig, certificate) {
  if (rtcConfig.certificates !== void 0 || certificate === void 0 || certificate.expires <= Date.now()) {
    return rtcConfig;
  }
  return { ...rtcConfig, certificates: [certificate] };
}

// ../simple/ts/calls.ts
var MAX_FRAME_ID = 4294967295;
var PendingCalls = class {
  /** @param timeoutMs how long a call waits for its reply before it rejects with `RelayTimeout`. */
  constructor(timeoutMs) {
    this.timeoutMs = timeoutMs;
  }
  timeoutMs;
  waiting = /* @__PURE__ */ new Map();
  lastId = 0;
  /** The id for the next request frame. */
  nextId() {
    this.lastId = this.lastId === MAX_FRAME_ID ? 1 : this.lastId + 1;
    return this.lastId;
  }
  /** `call` went out as request `id`: it waits for the reply, or its timeout. */
  wait(id, call) {
    const timer = setTimeout(() => {
      this.waiting.delete(id);
      call.reject(new RpcError(ErrorCode2.RelayTimeout, `${call.peer} did not answer in time`));
    }, this.timeoutMs);
    this.waiting.set(id, { call, timer });
  }
  /**
   * The reply (or error) to request `id` came from `peer`; one from another
   * peer, or for an id no one waits for, is ignored.
   */
  settle(peer, id, outcome) {
    const pending = this.waiting.get(id);
    if (pending === void 0 || pending.call.peer !== peer) return;
    this.waiting.delete(id);
    clearTimeout(pending.timer);
    if ("reply" in outcome) pending.call.resolve(outcome.reply);
    else pending.call.reject(outcome.error);
  }
  /** The channel to `peer` is gone: no reply can come back on it. */
  failPeer(peer, error) {
    for (const [id, pending] of this.waiting) {
      if (pending.call.peer !== peer) continue;
      this.waiting.delete(id);
      clearTimeout(pending.timer);
      pending.call.reject(error);
    }
  }
};

// ../simple/ts/outbox.ts
var Outboxes = class {
  boxes = /* @__PURE__ */ new Map();
  /** A link to `peer` opened: its messages may wait here. */
  open(peer) {
    this.boxes.set(peer, []);
  }
  /** Keeps `message` until `release(peer)`; dropped when `peer` has no outbox. */
  hold(peer, message) {
    this.boxes.get(peer)?.push(message);
  }
  /** What waits for `peer`, in send order; the outbox stays open, empty. */
  release(peer) {
    const waiting = this.boxes.get(peer) ?? [];
    if (this.boxes.has(peer)) this.boxes.set(peer, []);
    return waiting;
  }
  /** The link to `peer` closed: what waited is returned, the outbox is gone. */
  close(peer) {
    const waiting = this.boxes.get(peer) ?? [];
    this.boxes.delete(peer);
    return waiting;
  }
};

// ../simple/ts/group.ts
var Group = class {
  constructor(groupId, owner, capability, members, host) {
    this.groupId = groupId;
    this.host = host;
    this.calls = new PendingCalls(host.unicastTimeoutMs);
    this.rules = { owner, capability };
    this.memberList = [...members];
    this.reconcile();
  }
  groupId;
  host;
  onmessage = null;
  onunicast = null;
  onmemberjoin = null;
  onmemberleave = null;
  onlinkstatechange = null;
  rules;
  /** Join order, as the server's `get_members`: the owner first. */
  memberList;
  links = /* @__PURE__ */ new Map();
  /** Per peer, what waits for its link to leave 'connecting'. */
  outboxes = new Outboxes();
  /** Unicasts sent on a DataChannel, waiting for their reply frame. */
  calls;
  /** Members that left: a late relay from one of them must not bring it back. */
  departed = /* @__PURE__ */ new Set();
  /** Set once this member's view of the group is over: what its calls reject with from then on. */
  ended;
  /** Releases `handedOver`. */
  release = () => void 0;
  /**
   * Resolves one task after the caller of `createGroup`/`joinGroup` got this
   * group (or it ended): relays wait for it, so that handlers set right
   * after that `await` see a broadcast or unicast that came during the join
   * (a member without WebRTC greets a newcomer at once).
   */
  handedOver = new Promise((resolve) => {
    this.release = resolve;
  });
  id() {
    return this.groupId;
  }
  capability() {
    return this.rules.capability;
  }
  owner() {
    return this.rules.owner;
  }
  members() {
    return [...this.memberList];
  }
  linkState(member) {
    return this.links.get(member)?.state ?? "closed";
  }
  async broadcast(data) {
    this.assertMember();
    const self = this.host.self;
    const others = this.memberList.filter((member) => member !== self);
    const targets = others.filter((member) => mayBroadcast(this.rules, self, member));
    if (targets.length === 0 && others.length > 0) {
      throw new RpcError(ErrorCode2.PermissionDenied, "this capability lets this member broadcast to no one");
    }
    const body = toBody(data);
    const stable = typeof body === "string" ? body : body.slice();
    for (const member of targets) this.dispatch(member, { kind: "broadcast", body: stable });
  }
  unicast(target, data) {
    return new Promise((resolve, reject) => {
      this.assertMember();
      if (!this.memberList.includes(target) || target === this.host.self) {
        throw new RpcError(ErrorCode2.UserNotFound, `${target} is not another member of this group`);
      }
      if (!mayUnicast(this.rules, this.host.self, target)) {
        throw new RpcError(ErrorCode2.PermissionDenied, `this capability forbids unicasts to ${target}`);
      }
      const body = toBody(data);
      const call = { peer: target, body: typeof body === "string" ? body : body.slice(), resolve, reject };
      this.dispatch(target, { kind: "unicast", call });
    });
  }
  async leave() {
    this.assertMember();
    try {
      await this.host.call("leave", [this.groupId]);
    } finally {
      this.end(new RpcError(ErrorCode2.NotAMember, `this member left group ${this.groupId}`));
    }
  }
  /** The service is about to resolve `createGroup`/`joinGroup` with this group. */
  handOver() {
    setTimeout(this.release, 0);
  }
  /** The member list from `get_members`: it supersedes what came before it. */
  setMembers(members) {
    this.memberList = [...members];
    for (const member of members) this.departed.delete(member);
    this.reconcile();
  }
  memberJoined(member) {
    this.departed.delete(member);
    if (this.ended !== void 0 || this.memberList.includes(member)) return;
    this.memberList.push(member);
    this.reconcile();
    this.onmemberjoin?.(member);
  }
  memberLeft(member) {
    this.departed.add(member);
    if (this.ended !== void 0 || !this.memberList.includes(member)) return;
    this.memberList = this.memberList.filter((m) => m !== member);
    const [first] = this.memberList;
    if (member === this.rules.owner && first !== void 0) this.rules = { ...this.rules, owner: first };
    this.closeLink(member);
    this.reconcile();
    this.onmemberleave?.(member);
  }
  /** A `relay` from `from` arrived: a signal, a relayed broadcast, or a relayed unicast to answer. */
  async onRelay(from, data) {
    await this.handedOver;
    const message = parseRelayed(data);
    if (message === void 0) throw new RpcError(ErrorCode2.InvalidParams, "not a webrtc-p2p payload");
    if (!this.departed.has(from)) this.memberJoined(from);
    switch (message.kind) {
      case "description":
        this.links.get(from)?.receive({ description: message.description });
        return void 0;
      case "candidate":
        this.links.get(from)?.receive({ candidate: message.candidate });
        return void 0;
      case "nowebrtc":
        this.links.get(from)?.giveUp();
        return void 0;
      case "broadcast":
        this.deliver(from, message.body);
        return void 0;
      case "unicast":
        return toRelayBody(await this.answer(from, message.body));
    }
  }
  /** Ends this member's view of the group without telling the server (left, or session gone). */
  end(reason) {
    if (this.ended !== void 0) return;
    this.ended = reason;
    this.release();
    for (const member of [...this.links.keys()]) this.closeLink(member);
    this.host.forget(this);
  }
  /** Opens the links the rules now call for and closes the ones they no longer allow. */
  reconcile() {
    if (this.ended !== void 0) return;
    const self = this.host.self;
    for (const member of this.memberList) {
      if (mayLink(this.rules, self, member) && !this.links.has(member)) this.openLink(member);
    }
    for (const member of [...this.links.keys()]) {
      if (!this.memberList.includes(member) || !mayLink(this.rules, self, member)) this.closeLink(member);
    }
  }
  openLink(peer) {
    const options = {
      polite: this.host.self < peer,
      rtcConfig: this.host.rtcConfig,
      connectTimeoutMs: this.host.connectTimeoutMs,
      blockCandidates: this.host.forceRelay(peer)
    };
    const link = this.host.openLink(peer, options, {
      signal: (signal) => this.sendSignal(peer, link, signal),
      statechange: (state) => this.linkChanged(peer, state),
      message: (data) => this.onFrame(peer, data)
    });
    this.links.set(peer, link);
    this.outboxes.open(peer);
    this.onlinkstatechange?.(peer, link.state);
  }
  /**
   * Offers go as relay requests so that a peer which will not negotiate (no
   * WebRTC) can say so in its answer, and the link is relayed at once rather
   * than at its connect timeout. Answers and candidates stay notifications:
   * nothing needs their reply, and relays keep their order either way.
   */
  sendSignal(peer, link, signal) {
    const params = [this.groupId, peer, { signal }];
    if (!("description" in signal) || signal.description.type !== "offer") {
      this.host.notify("relay", params);
      return;
    }
    this.host.call("relay", params).then(
      (answer) => {
        if (!offerTaken(answer)) link.giveUp();
      },
      () => link.giveUp()
    );
  }
  closeLink(peer) {
    const link = this.links.get(peer);
    if (link === void 0) return;
    this.links.delete(peer);
    link.close();
  }
  linkChanged(peer, state) {
    if (state !== "direct") {
      this.calls.failPeer(peer, new RpcError(ErrorCode2.PeerGone, `the link to ${peer} closed before it answered`));
    }
    if (state === "closed") {
      for (const message of this.outboxes.close(peer)) {
        if (message.kind === "unicast") message.call.reject(new RpcError(ErrorCode2.PeerGone, `${peer} left`));
      }
    } else if (state !== "connecting") {
      for (const message of this.outboxes.release(peer)) this.dispatch(peer, message);
    }
    this.onlinkstatechange?.(peer, state);
  }
  /** Sends one message to one peer by the route its link offers now. */
  dispatch(peer, message) {
    const link = this.links.get(peer);
    if (link === void 0) {
      if (message.kind === "unicast") message.call.reject(new RpcError(ErrorCode2.PeerGone, `no link to ${peer}`));
      return;
    }
    if (link.state === "connecting") {
      this.outboxes.hold(peer, message);
      return;
    }
    if (link.state === "direct" && this.sendDirect(link, message)) return;
    this.sendRelayed(peer, message);
  }
  sendDirect(link, message) {
    if (message.kind === "broadcast") return link.send(encodeFrame({ kind: 0 /* Broadcast */, id: 0, body: message.body }));
    const id = this.calls.nextId();
    if (!link.send(encodeFrame({ kind: 1 /* Request */, id, body: message.call.body }))) return false;
    this.calls.wait(id, message.call);
    return true;
  }
  sendRelayed(peer, message) {
    if (message.kind === "broadcast") {
      this.host.notify("relay", [this.groupId, peer, { broadcast: toRelayBody(message.body) }]);
      return;
    }
    const { call } = message;
    this.host.call("relay", [this.groupId, peer, { unicast: toRelayBody(call.body) }]).then(
      (result) => {
        const reply = fromRelayBody(result);
        if (reply === void 0) call.reject(new RpcError(ErrorCode2.InternalError, "malformed unicast reply"));
        else call.resolve(reply);
      },
      (error) => call.reject(toRpcError(error))
    );
  }
  onFrame(peer, data) {
    const frame = decodeFrame(data);
    if (frame === void 0) return;
    switch (frame.kind) {
      case 0 /* Broadcast */:
        this.deliver(peer, frame.body);
        return;
      case 1 /* Request */:
        void this.answerFrame(peer, frame);
        return;
      case 2 /* Reply */:
        this.calls.settle(peer, frame.id, { reply: frame.body });
        return;
      case 3 /* Error */:
        this.calls.settle(peer, frame.id, { error: errorFromBody(frame.body) });
        return;
    }
  }
  async answerFrame(peer, request) {
    let reply;
    try {
      reply = { kind: 2 /* Reply */, id: request.id, body: await this.answer(peer, request.body) };
    } catch (error) {
      reply = { kind: 3 /* Error */, id: request.id, body: errorBody(toRpcError(error)) };
    }
    this.links.get(peer)?.send(encodeFrame(reply));
  }
  deliver(from, body) {
    if (this.ended !== void 0 || !mayBroadcast(this.rules, from, this.host.self)) return;
    this.onmessage?.(from, body);
  }
  /** The reply of this member's `onunicast` to a unicast from `from`. */
  async answer(from, body) {
    if (this.ended !== void 0) throw this.ended;
    if (!mayUnicast(this.rules, from, this.host.self)) {
      throw new RpcError(ErrorCode2.PermissionDenied, "this capability forbids unicasts between these members");
    }
    const handler = this.onunicast;
    if (handler === null) throw new RpcError(ErrorCode2.MethodNotFound, "the target has no onunicast handler");
    let reply;
    try {
      reply = await handler(from, body);
    } catch (error) {
      throw new RpcError(ErrorCode2.InternalError, error instanceof Error ? error.message : String(error));
    }
    const replyBody = toBody(reply);
    return typeof replyBody === "string" ? replyBody : replyBody.slice();
  }
  assertMember() {
    if (this.ended !== void 0) throw this.ended;
  }
};

// ../simple/ts/link.ts
var CHANNEL_LABEL = "webrtc-p2p";
var CHANNEL_HIGH_WATER_BYTES = 4 * 1024 * 1024;
var CHANNEL_LOW_WATER_BYTES = 1024 * 1024;
var RtcLink = class {
  constructor(options, events) {
    this.options = options;
    this.events = events;
    this.pc = new RTCPeerConnection(options.rtcConfig);
    this.pc.onnegotiationneeded = () => void this.offer();
    this.pc.onicecandidate = ({ candidate }) => {
      if (candidate !== null && !options.blockCandidates) this.events.signal({ candidate: candidate.toJSON() });
    };
    this.pc.onconnectionstatechange = () => {
      if (this.pc.connectionState === "failed") this.fallBack();
    };
    this.pc.ondatachannel = ({ channel }) => this.adopt(channel);
    if (!options.polite) {
      this.adopt(this.pc.createDataChannel(CHANNEL_LABEL));
      void this.offer();
    }
    this.connectTimer = setTimeout(() => {
      if (this.state === "connecting") this.fallBack();
    }, options.connectTimeoutMs);
  }
  options;
  events;
  /** 'connecting' until the channel opens ('direct') or P2P gives up ('relayed'). */
  state = "connecting";
  pc;
  channel;
  /** True while this side creates and sets an offer: an incoming offer then collides. */
  makingOffer = false;
  /** True after the impolite side dropped a colliding offer: its candidates are dropped too. */
  ignoreOffer = false;
  /** Remote candidates that came before the remote description they belong to. */
  pendingCandidates = [];
  /** Messages waiting for the channel to drain, in send order. */
  backlog = [];
  /** Incoming signals are applied one after the other, in arrival order. */
  signals = Promise.resolve();
  connectTimer;
  send(message) {
    const channel = this.channel;
    if (this.state !== "direct" || channel === void 0) return false;
    if (message.byteLength > (this.pc.sctp?.maxMessageSize ?? Infinity)) return false;
    if (channel.readyState !== "open") {
      this.fallBack();
      return false;
    }
    this.backlog.push(message);
    this.drain(channel);
    return this.state === "direct";
  }
  receive(signal) {
    this.signals = this.signals.then(() => this.apply(signal)).catch(() => this.fallBack());
  }
  giveUp() {
    this.fallBack();
  }
  close() {
    this.setState("closed");
    this.shutDown();
  }
  async offer() {
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.sendDescription();
    } catch {
      this.fallBack();
    } finally {
      this.makingOffer = false;
    }
  }
  async apply(signal) {
    if (this.state === "closed" || this.state === "relayed") return;
    if ("candidate" in signal) {
      if (this.options.blockCandidates || this.ignoreOffer) return;
      if (this.pc.remoteDescription === null) this.pendingCandidates.push(signal.candidate);
      else await this.addCandidate(signal.candidate);
      return;
    }
    const description = this.filter(signal.description);
    const collision = description.type === "offer" && (this.makingOffer || this.pc.signalingState !== "stable");
    this.ignoreOffer = !this.options.polite && collision;
    if (this.ignoreOffer) return;
    if (collision) {
      await Promise.all([this.pc.setLocalDescription({ type: "rollback" }), this.pc.setRemoteDescription(description)]);
    } else {
      await this.pc.setRemoteDescription(description);
    }
    for (const candidate of this.pendingCandidates.splice(0)) await this.addCandidate(candidate);
    if (description.type === "offer") {
      await this.pc.setLocalDescription();
      this.sendDescription();
    }
  }
  /**
   * A candidate that does not apply (say, one of an offer we ignored) only
   * fails to help: it is no reason to give the link up, the timeout is.
   */
  async addCandidate(candidate) {
    await this.pc.addIceCandidate(candidate).catch(() => void 0);
  }
  sendDescription() {
    const description = this.pc.localDescription;
    if (description === null) return;
    this.events.signal({ description: this.filter({ type: description.type, sdp: description.sdp }) });
  }
  /** With the test hook on, descriptions carry no candidates either. */
  filter(description) {
    if (!this.options.blockCandidates || description.sdp === void 0) return description;
    const sdp = description.sdp.split("\r\n").filter((line) => !line.startsWith("a=candidate:")).join("\r\n");
    return { type: description.type, sdp };
  }
  adopt(channel) {
    if (this.channel !== void 0) {
      channel.close();
      return;
    }
    this.channel = channel;
    channel.binaryType = "arraybuffer";
    channel.bufferedAmountLowThreshold = CHANNEL_LOW_WATER_BYTES;
    channel.onbufferedamountlow = () => this.drain(channel);
    channel.onopen = () => this.setState("direct");
    channel.onclose = () => this.fallBack();
    channel.onmessage = ({ data }) => this.events.message(data);
    if (channel.readyState === "open") this.setState("direct");
  }
  drain(channel) {
    try {
      for (let next = this.backlog[0]; next !== void 0; next = this.backlog[0]) {
        if (channel.bufferedAmount + next.byteLength > CHANNEL_HIGH_WATER_BYTES) return;
        channel.send(next);
        this.backlog.shift();
      }
    } catch {
      this.fallBack();
    }
  }
  /**
   * P2P failed, timed out or died: the pair talks through the server from
   * now on. The connection is closed so that both sides agree quickly (the
   * peer's channel closes too) and a relayed link never flips back.
   */
  fallBack() {
    if (this.state === "closed" || this.state === "relayed") return;
    this.setState("relayed");
    this.shutDown();
  }
  /** What is still queued is lost, like what was in flight on the channel. */
  shutDown() {
    clearTimeout(this.connectTimer);
    this.backlog.length = 0;
    if (this.channel !== void 0) this.channel.onclose = null;
    this.pc.close();
  }
  setState(state) {
    if (this.state === state || this.state === "closed") return;
    if (state === "direct") clearTimeout(this.connectTimer);
    this.state = state;
    this.events.statechange(state);
  }
};

// ../simple/ts/wire.ts
var ID_PATTERN = /^[0-9a-f]{32}$/;
function isId(value) {
  return typeof value === "string" && ID_PATTERN.test(value);
}
function contractBroken(what) {
  return new RpcError(ErrorCode2.InternalError, `the server sent ${what}`);
}
function parseId(value) {
  if (!isId(value)) throw contractBroken("an invalid id");
  return value;
}
function parseIds(value) {
  if (!Array.isArray(value) || !value.every(isId)) throw contractBroken("an invalid member list");
  return value;
}
function parseJoinResult(value) {
  if (typeof value === "object" && value !== null) {
    const { owner, capability } = value;
    if (isId(owner) && typeof capability === "number") return { owner, capability };
  }
  throw contractBroken("an invalid join result");
}
function positional(params, names) {
  if (Array.isArray(params)) return params;
  if (typeof params === "object" && params !== null) {
    const byName = params;
    return names.map((name) => byName[name]);
  }
  return [];
}
function parseRelayRequest(params) {
  const [groupId, from, data] = positional(params, ["group_id", "user_id", "data"]);
  if (!isId(groupId) || !isId(from) || data === void 0) {
    throw new RpcError(ErrorCode2.InvalidParams, "expected [group_id, user_id, data]");
  }
  return { groupId, from, data };
}
function parseGroupEvent(params) {
  const [groupId, userId] = positional(params, ["group_id", "user_id"]);
  return isId(groupId) && isId(userId) ? { groupId, userId } : void 0;
}

// ../simple/ts/service.ts
var DEFAULT_CONNECT_TIMEOUT_MS = 1e4;
var DEFAULT_UNICAST_TIMEOUT_MS = 1e4;
var SimpleService = class {
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
  }
  url;
  options;
  onclose = null;
  connection;
  joined;
  host;
  self;
  closed = false;
  /** Started with the session, shared by every link of every group (see certificate.ts). */
  certificate;
  groups = /* @__PURE__ */ new Map();
  /**
   * Groups whose `join` is on its way: a relay for one of them waits for it,
   * as a peer's offer can arrive before our own `join` answer is handled.
   */
  joining = /* @__PURE__ */ new Map();
  join() {
    this.joined ??= this.connect();
    return this.joined;
  }
  close() {
    if (this.closed) return;
    this.connection?.socket.close(1e3, "closed by the client");
    this.shutDown("the service was closed");
  }
  info() {
    const self = this.self;
    if (self === void 0) throw new RpcError(ErrorCode2.NotInitialized, "join() has not resolved yet");
    return { id: () => self };
  }
  async createGroup(capability = DEFAULT_CAPABILITY) {
    const host = await this.groupHost();
    const id = parseId(await host.call("create", [capability]));
    const group = new Group(id, host.self, capability, [host.self], host);
    this.groups.set(id, group);
    group.handOver();
    return group;
  }
  joinGroup(id) {
    const known = this.groups.get(id) ?? this.joining.get(id);
    if (known !== void 0) return Promise.resolve(known);
    const joining = this.enter(id).finally(() => this.joining.delete(id));
    this.joining.set(id, joining);
    return joining;
  }
  async enter(id) {
    const host = await this.groupHost();
    const { owner, capability } = parseJoinResult(await host.call("join", [id]));
    const members = host.call("get_members", [id]);
    const group = new Group(id, owner, capability, owner === host.self ? [owner] : [owner, host.self], host);
    this.groups.set(id, group);
    try {
      group.setMembers(parseIds(await members));
    } catch (error) {
      const failure = toRpcError(error);
      group.end(failure);
      throw failure;
    }
    group.handOver();
    return group;
  }
  async connect() {
    if (this.closed) throw new RpcError(ErrorCode2.ConnectionClosed, "the service was closed");
    this.certificate = this.options.rtcConfig?.certificates === void 0 ? generateCertificate() : Promise.resolve(void 0);
    const socket = new WebSocket(this.url);
    socket.binaryType = "arraybuffer";
    const rpc = new import_json_rpc_22.JSONRPCServerAndClient(
      new import_json_rpc_22.JSONRPCServer(),
      new import_json_rpc_22.JSONRPCClient((request) => {
        if (socket.readyState !== WebSocket.OPEN) throw new Error("the WebSocket is not open");
        socket.send(JSON.stringify(request));
      })
    );
    rpc.addMethod("relay", (params) => this.onRelay(params));
    rpc.addMethod("member_joined", (params) => this.onMemberEvent(params, (group, user) => group.memberJoined(user)));
    rpc.addMethod("member_left", (params) => this.onMemberEvent(params, (group, user) => group.memberLeft(user)));
    this.connection = { socket, rpc };
    socket.onmessage = ({ data }) => this.onFrame(rpc, data);
    socket.onclose = () => this.shutDown("the connection to the server closed");
    await new Promise((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new RpcError(ErrorCode2.ConnectionClosed, `cannot connect to ${this.url}`));
    });
    const self = parseId(await this.call("init", []));
    this.self = self;
    return this.info();
  }
  onFrame(rpc, data) {
    let message;
    try {
      message = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data));
    } catch {
      return;
    }
    rpc.receiveAndSend(message).catch(() => void 0);
  }
  async onRelay(params) {
    try {
      const { groupId, from, data } = parseRelayRequest(params);
      const group = this.groups.get(groupId) ?? await this.joining.get(groupId)?.catch(() => void 0);
      if (group === void 0) throw new RpcError(ErrorCode2.NotAMember, `not a member of ${groupId}`);
      return await group.onRelay(from, data);
    } catch (error) {
      throw toRpcError(error).toException();
    }
  }
  onMemberEvent(params, apply) {
    const event = parseGroupEvent(params);
    if (event === void 0) throw new import_json_rpc_22.JSONRPCErrorException("expected [group_id, user_id]", ErrorCode2.InvalidParams);
    const group = this.groups.get(event.groupId);
    if (group !== void 0) apply(group, event.userId);
  }
  /** What a group needs of this service, once `join()` resolved. */
  async groupHost() {
    await this.join();
    const certificate = await this.certificate;
    if (this.closed) throw new RpcError(ErrorCode2.ConnectionClosed, "the service was closed");
    this.host ??= this.makeHost(this.info().id(), certificate);
    return this.host;
  }
  makeHost(self, certificate) {
    const rtcConfig = this.options.rtcConfig ?? { iceServers: [] };
    return {
      self,
      get rtcConfig() {
        return withCertificate(rtcConfig, certificate);
      },
      connectTimeoutMs: this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      unicastTimeoutMs: this.options.unicastTimeoutMs ?? DEFAULT_UNICAST_TIMEOUT_MS,
      forceRelay: this.options.forceRelay ?? (() => false),
      openLink: (_peer, options, events) => new RtcLink(options, events),
      call: (method, params) => this.call(method, params),
      notify: (method, params) => this.notify(method, params),
      forget: (group) => {
        if (this.groups.get(group.id()) === group) this.groups.delete(group.id());
      }
    };
  }
  async call(method, params) {
    const connection = this.connection;
    if (connection === void 0 || this.closed) throw new RpcError(ErrorCode2.ConnectionClosed, "not connected");
    try {
      return await connection.rpc.request(method, params);
    } catch (error) {
      throw toRpcError(error);
    }
  }
  notify(method, params) {
    if (this.closed) return;
    try {
      this.connection?.rpc.notify(method, params);
    } catch {
    }
  }
  /** Every exit path ends here once: pending calls fail, groups end, `onclose` runs. */
  shutDown(reason) {
    if (this.closed) return;
    this.closed = true;
    this.connection?.rpc.rejectAllPendingRequests(reason);
    const gone = new RpcError(ErrorCode2.ConnectionClosed, reason);
    for (const group of [...this.groups.values()]) group.end(gone);
    this.onclose?.();
  }
};
export {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_UNICAST_TIMEOUT_MS,
  ErrorCode2 as ErrorCode,
  GroupCapability,
  MAX_BODY_BYTES,
  RpcError,
  SimpleService
};
