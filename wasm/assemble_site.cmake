# Assembles the static site (cmake -P, run by the ekvae_site target):
#   SITE_DIR/index.html, ekvae-page.js   from WEB_DIR
#   SITE_DIR/ekvae.js, ekvae.wasm         from APP_DIR
#   SITE_DIR/ekvae_train.js, .wasm        from APP_DIR (the trainer, run by ekvae-train-worker.js)
#   SITE_DIR/ekvae_train_mt.js, .wasm, .worker.js   its multi-threaded build (cross-origin isolated pages)
#   SITE_DIR/models/*.safetensors         from MODELS_DIR (none yet is fine)
#   SITE_DIR/models/index.json            {"models": ["name.safetensors", ...]}
foreach(v WEB_DIR MODELS_DIR APP_DIR SITE_DIR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "assemble_site.cmake: ${v} not set")
  endif()
endforeach()

file(MAKE_DIRECTORY ${SITE_DIR})
file(COPY ${WEB_DIR}/index.html ${WEB_DIR}/ekvae-page.js ${WEB_DIR}/ekvae-train-worker.js DESTINATION ${SITE_DIR})
file(COPY ${APP_DIR}/ekvae.js ${APP_DIR}/ekvae.wasm ${APP_DIR}/ekvae_train.js ${APP_DIR}/ekvae_train.wasm
  ${APP_DIR}/ekvae_train_mt.js ${APP_DIR}/ekvae_train_mt.wasm ${APP_DIR}/ekvae_train_mt.worker.js DESTINATION ${SITE_DIR})

# models/: rebuilt each time so a removed model does not linger.
file(REMOVE_RECURSE ${SITE_DIR}/models)
file(MAKE_DIRECTORY ${SITE_DIR}/models)
file(GLOB models RELATIVE ${MODELS_DIR} ${MODELS_DIR}/*.safetensors)
list(SORT models)
set(names "")
foreach(m ${models})
  file(COPY ${MODELS_DIR}/${m} DESTINATION ${SITE_DIR}/models)
  list(APPEND names "\"${m}\"")
endforeach()
if(EXISTS ${MODELS_DIR}/study.json)  # the shipped models' seed study (the page test reads it)
  file(COPY ${MODELS_DIR}/study.json DESTINATION ${SITE_DIR}/models)
endif()
list(JOIN names ", " joined)
file(WRITE ${SITE_DIR}/models/index.json "{\"models\": [${joined}]}\n")
list(LENGTH models n)
message(STATUS "site: ${SITE_DIR} (${n} model file(s))")
