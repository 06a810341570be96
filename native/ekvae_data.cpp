// ekvae_data: generates a dataset of a world (pendulum, arm) and writes it as safetensors.
//   ekvae_data --out FILE.safetensors [--preset pendulum|arm] [--sequences N] [--steps T] [--seed S] [--image-size W]
// Bad input: a message naming the problem and a fix, exit status 2, and no partial file.
#include "cli.h"
#include "world.h"

#include <cstdio>
#include <sys/stat.h>

using namespace ekvae;

static const char * kUsage =
    "usage: ekvae_data --out FILE.safetensors [--preset pendulum|arm] [--sequences N] [--steps T] [--seed S] "
    "[--image-size W]   (--help for details)";

static const char * kHelp =
    "ekvae_data: generate image sequences of a world under random actions.\n"
    "\n"
    "  --out FILE.safetensors  output file (required); written atomically\n"
    "  --preset NAME           the world: pendulum (gym Pendulum-v1, one torque; the default) or arm\n"
    "                          (a two-link arm hanging under gravity, a torque at each joint)\n"
    "  --sequences N           number of sequences (default 1000)\n"
    "  --steps T               frames per sequence (default 64)\n"
    "  --seed S                random seed, 0..2^64-1 (default 1); same seed, same bytes\n"
    "  --image-size W          image side in pixels, 4..256 (default: the world's, 16 for the pendulum, 24 for the arm)\n"
    "\n"
    "Tensors: images F32 [N, T, W, W], actions F32 [N, T, U], states F32 [N, T, S] (pendulum: U = 1, S = 2,\n"
    "theta and omega; arm: U = 2, S = 4, theta1, theta2 (the elbow, relative), omega1, omega2); the world's\n"
    "name, state names and parameters are in the metadata.\n";

static int run(int argc, char ** argv) {
    Args args(argc, argv, {"out", "preset", "sequences", "steps", "seed", "image-size"}, {"help"});
    if (!args.ok()) usage_error(args.err, kUsage);
    if (args.has("help")) {
        std::printf("%s\n\n%s", kUsage, kHelp);
        return 0;
    }

    DatasetConfig cfg;
    const std::string preset = args.get_string("preset", "pendulum");
    cfg.world = make_world(preset);
    if (!cfg.world) usage_error("unknown preset '" + preset + "' (available: " + world_names_list() + ")", kUsage);
    cfg.image_size = cfg.world->default_image_size;
    const int int_max = 2147483647;
    // wide ranges here: validate_dataset_config gives the specific message for <= 0 or too big
    if (!args.get_int("sequences", cfg.sequences, -int_max, int_max) ||
        !args.get_int("steps", cfg.steps, -int_max, int_max) ||
        !args.get_int("image-size", cfg.image_size, -int_max, int_max) ||
        !args.get_u64("seed", cfg.seed))
        usage_error(args.err, kUsage);
    const std::string out = args.get_string("out");
    if (out.empty()) usage_error("--out FILE.safetensors is required", kUsage);

    std::string err;
    if (!validate_dataset_config(cfg, err)) usage_error(err, kUsage);

    // a missing directory, a name too long or a device at --out: refused before generating
    if (!check_output_path(out, err)) usage_error(err + " (--out)", kUsage);
    const double need = 2.0 * (double)cfg.sequences * cfg.steps * ((double)cfg.image_size * cfg.image_size + cfg.world->S + cfg.world->U) * 4 + 32e6;
    const double have = (double)physical_memory_bytes();
    if (have > 0 && need > 0.9 * have)
        usage_error("this dataset needs about " + human_bytes(need) + " of memory to generate and write but this process may use " +
                        human_bytes(have) + "; lower --sequences or --steps", kUsage);

    Dataset d = generate_dataset(cfg);
    std::vector<uint8_t> bytes = dataset_to_safetensors(d);
    if (!write_file_atomic(out, bytes, err)) {
        // the issue asks for status 2 for an unwritable output path as well
        std::fprintf(stderr, "error: %s\n", err.c_str());
        return 2;
    }
    std::printf("wrote %s: %s, %d sequences x %d steps, %dx%d images, seed %llu, %zu bytes\n",
                out.c_str(), d.world().name.c_str(), d.N, d.T, d.W, d.W, (unsigned long long)cfg.seed, bytes.size());
    return 0;
}

int main(int argc, char ** argv) { return cli_main(argc, argv, run); }
