/* GCC 13 headers make every translation unit that includes <iostream> reference std::ios_base_library_init()
   (GLIBCXX_3.4.32). On an older libstdc++ the iostreams are initialised inside the library itself, so an empty
   definition is correct. Loaded with RTLD_GLOBAL before TorchSharp's native wrapper. */
void _ZSt21ios_base_library_initv(void) {}
